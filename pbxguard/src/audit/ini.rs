//! Asterisk's configuration syntax: `[section](template)`, `key = value` / `key => value`,
//! `;` comments. Lenient like Asterisk itself; lines it cannot read are skipped.

/// One `key = value` with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Lowercased key.
    pub key: String,
    /// Value, trimmed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// One section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// Its line.
    pub line: usize,
    /// Its entries in order.
    pub entries: Vec<Entry>,
}

impl Section {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// Parses a whole file.
pub fn parse(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim().to_string();
            sections.push(Section {
                name,
                line: index + 1,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim_start_matches('>').trim().to_string();
        let entry = Entry {
            key: key.trim().to_ascii_lowercase(),
            value,
            line: index + 1,
        };
        match sections.last_mut() {
            Some(section) => section.entries.push(entry),
            None => sections.push(Section {
                name: String::new(),
                line: 0,
                entries: vec![entry],
            }),
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_entries_and_comments() {
        let s = parse(
            "; top\n[100](endpoint-template)\ntype=endpoint ; the phone\ncontext => from-internal\n\n[general]\nallowguest = yes\nbroken line\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "100");
        assert_eq!(s[0].get("context").unwrap().value, "from-internal");
        assert_eq!(s[0].get("type").unwrap().line, 3);
        assert_eq!(s[1].get("allowguest").unwrap().value, "yes");
    }
}
