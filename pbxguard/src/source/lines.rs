//! Splits a byte stream into lines: partial last lines wait for their newline, oversized lines
//! are dropped whole, bytes are never decoded (invalid UTF-8 is just bytes).

/// Longest line we look at. Longer lines are dropped entirely: cutting one would let an
/// attacker end the cut piece with a fake "failed for <victim>" tail.
pub const MAX_LINE: usize = 64 * 1024;

/// Incremental line splitter.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
    oversized: u64,
    completed: u64,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> LineSplitter {
        LineSplitter::with_max(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter dropping lines longer than `max` instead of [`MAX_LINE`] (the journal's
    /// JSON wraps a line of up to [`MAX_LINE`] in escapes and metadata).
    pub fn with_max(max: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            discarding: false,
            oversized: 0,
            completed: 0,
            max,
        }
    }

    /// Feeds a chunk; calls `on_line` for each complete line (without `\n`).
    pub fn feed(&mut self, chunk: &[u8], on_line: &mut dyn FnMut(&[u8])) {
        self.feed_numbered(chunk, &mut |_, line| on_line(line));
    }

    /// Like [`LineSplitter::feed`], also passing each line's 1-based number (dropped
    /// oversized lines keep their numbers).
    pub fn feed_numbered(&mut self, mut chunk: &[u8], on_line: &mut dyn FnMut(u64, &[u8])) {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            let piece = &chunk[..end];
            chunk = &chunk[end + 1..];
            self.completed += 1;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if self.partial.len() + piece.len() > self.max {
                self.partial.clear();
                self.oversized += 1;
            } else if self.partial.is_empty() {
                on_line(self.completed, piece);
            } else {
                self.partial.extend_from_slice(piece);
                on_line(self.completed, &self.partial);
                self.partial.clear();
            }
        }
        if self.discarding {
            return;
        }
        if self.partial.len() + chunk.len() > self.max {
            self.partial.clear();
            self.discarding = true;
            self.oversized += 1;
        } else {
            self.partial.extend_from_slice(chunk);
        }
    }

    /// Ends the stream: a last line without a newline is passed on as a line.
    pub fn finish(&mut self, on_line: &mut dyn FnMut(u64, &[u8])) {
        if !self.partial.is_empty() {
            self.completed += 1;
            on_line(self.completed, &self.partial);
            self.partial.clear();
        } else if self.discarding {
            self.completed += 1;
        }
        self.discarding = false;
    }

    /// Lines ended so far, dropped ones included.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Forgets a partial line (the file it came from was replaced or truncated).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    /// Lines dropped for being longer than the maximum ([`MAX_LINE`] by default).
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Bytes of an incomplete last line held back.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, LineSplitter) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |l| out.push(l.to_vec()));
        }
        (out, s)
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let (lines, s) = split(&[b"one\ntw", b"o\nthr"]);
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(s.pending(), 3);
    }

    #[test]
    fn oversized_lines_are_dropped_whole() {
        let big = vec![b'x'; MAX_LINE + 10];
        let (lines, s) = split(&[b"a\n", &big[..40_000], &big[40_000..], b"tail of big\nb\n"]);
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(s.oversized(), 1);
        let (lines, _) = split(&[&big, b"\nc\n"]);
        assert_eq!(lines, [b"c".to_vec()]);
    }

    #[test]
    fn a_long_line_inside_one_big_chunk_is_dropped_too() {
        let mut chunk = vec![b'x'; MAX_LINE + 1];
        chunk.extend_from_slice(b"\nshort\n");
        let (lines, s) = split(&[&chunk]);
        assert_eq!(lines, [b"short".to_vec()]);
        assert_eq!(s.oversized(), 1);
        let mut s = LineSplitter::with_max(4);
        let mut out = Vec::new();
        s.feed(b"four\nfive!\n", &mut |l| out.push(l.to_vec()));
        assert_eq!((out, s.oversized()), (vec![b"four".to_vec()], 1));
    }

    #[test]
    fn numbers_count_dropped_lines_and_the_unterminated_last_one() {
        let big = vec![b'x'; MAX_LINE + 1];
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        for chunk in [&b"a\n"[..], &big, b"\nb\nc"] {
            s.feed_numbered(chunk, &mut |n, l| got.push((n, l.to_vec())));
        }
        s.finish(&mut |n, l| got.push((n, l.to_vec())));
        assert_eq!(
            got,
            [(1, b"a".to_vec()), (3, b"b".to_vec()), (4, b"c".to_vec())]
        );
        assert_eq!(s.completed(), 4);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..2000), cuts in proptest::collection::vec(0usize..2000, 0..10)) {
            let whole = split(&[&data]).0;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for c in cuts { chunks.push(&data[start..c]); start = c; }
            chunks.push(&data[start..]);
            prop_assert_eq!(split(&chunks).0, whole);
        }
    }
}
