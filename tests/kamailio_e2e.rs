//! Debian's Kamailio as packaged, end to end. Its stock `/etc/kamailio/kamailio.cfg`, with
//! `WITH_AUTH` (db_text, a subscriber added with `kamdbctl` / `kamctl`) and exactly the
//! README's lines, runs in the lab's inside namespace and logs through syslog(3) to a
//! private rsyslogd (its own config, socket and file, as Debian's rsyslog writes
//! /var/log/syslog). pbxguard follows that file with the `kamailio` filter. From the
//! outside namespace a phone registers with sipp (digest auth, the right password) while a
//! cracker (sipp, a phone's User-Agent, wrong passwords, a Call-ID that copies a pbxguard
//! line with the phone's address into the stock `log_prefix`) guesses.
//!
//! Needs root and the Debian packages `kamailio`, `rsyslog` and `sip-tester`, which
//! `cargo xtask setup` installs; nothing is installed here.

#[macro_use]
mod testenv;

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use testenv::{ATTACKER, Daemon, Lab, PBX, PHONE};

/// The ban threshold under test.
const MAXRETRY: usize = 5;
/// Guesses that may still reach Kamailio while the ban is on its way (Kamailio -> rsyslog
/// -> file -> pbxguard -> kernel); the cracker guesses at most four times a second.
const SLACK: usize = 3;
/// Wrong passwords the cracker tries.
const GUESSES: usize = 15;
/// Registrations the phone makes while the cracker guesses (one a second).
const PHONE_REGISTRATIONS: usize = 10;
/// The subscriber.
const USER: &str = "100";
const PASSWORD: &str = "Phone-s3cret";
/// A second cracker, sending its own datagrams.
const EVADER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 67);

/// The `auth_check` block of the stock `route[AUTH]` that the README's lines replace.
const STOCK_AUTH: &str = "\t\tif (!auth_check(\"$fd\", \"subscriber\", \"1\")) {
\t\t\tauth_challenge(\"$fd\", \"0\");
\t\t\texit;
\t\t}
";

/// Marks the README block the test pastes.
const README_MARK: &str =
    "<!-- tests/kamailio_e2e.rs pastes the next block into Debian's kamailio.cfg -->";

/// Debian's `kamailio.cfg`, checked to be the file exactly as the package ships it (the
/// conffile checksum dpkg keeps).
fn stock_config() -> String {
    const PATH: &str = "/etc/kamailio/kamailio.cfg";
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "kamailio"])
        .output()
        .unwrap();
    let shipped = String::from_utf8_lossy(&conffiles.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(PATH)).then(|| fields.next().map(str::to_string))?
        })
        .expect("the Debian package kamailio is installed (cargo xtask setup installs it)");
    let sum = Command::new("md5sum").arg(PATH).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next(),
        Some(shipped.as_str()),
        "{PATH} is not the file Debian's kamailio package ships, and this test runs the \
         stock config: move it aside and restore the original with \
         `apt-get install --reinstall -o Dpkg::Options::=--force-confmiss kamailio`"
    );
    std::fs::read_to_string(PATH).unwrap()
}

/// The block of README.md an admin pastes into `route[AUTH]`.
fn readme_recipe() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let after = &readme[readme
        .find(README_MARK)
        .expect("README marks the Kamailio recipe")..];
    let body = &after[after.find("```\n").expect("a code block after the mark") + 4..];
    body[..body.find("```").expect("the code block ends")].to_string()
}

/// A private rsyslogd: its own config, socket and output file, like Debian's
/// `*.*;auth,authpriv.none -/var/log/syslog` (without `imklog`: the host's kernel log is
/// not ours to read).
struct Rsyslog {
    child: Child,
    socket: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, output: &Path) -> Rsyslog {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("log.sock");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{socket}\")\n\
                 *.*;auth,authpriv.none action(type=\"omfile\" file=\"{output}\")\n",
                dir = dir.display(),
                socket = socket.display(),
                output = output.display(),
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("rsyslogd.out")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rsyslogd (Debian package rsyslog; cargo xtask setup installs it)");
        let mut rsyslog = Rsyslog { child, socket };
        wait_until("rsyslogd's socket", || {
            assert!(
                rsyslog.child.try_wait().unwrap().is_none(),
                "rsyslogd exited"
            );
            rsyslog.socket.exists()
        });
        rsyslog
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Makes `/dev/log` in a private mount namespace point at the test's rsyslogd (glibc's
/// syslog(3) always writes there), with the host's device nodes bound in; then runs the
/// command. Nothing of it is visible outside that namespace.
const PRIVATE_DEV: &str = r#"set -e
dir=$1 socket=$2
shift 2
mkdir -p "$dir/hostdev"
mount --rbind /dev "$dir/hostdev"
mount -t tmpfs -o mode=755 pbxguard-test-dev /dev
for n in null zero full random urandom tty; do
    [ -e "$dir/hostdev/$n" ] || continue
    touch "/dev/$n"
    mount --bind "$dir/hostdev/$n" "/dev/$n"
done
mkdir /dev/shm
mount -t tmpfs -o mode=1777 pbxguard-test-shm /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s "$socket" /dev/log
umount -l "$dir/hostdev"
exec "$@"
"#;

/// Debian's Kamailio in the lab's inside namespace, in its own process group.
struct Kamailio {
    child: Child,
    dir: PathBuf,
}

impl Kamailio {
    /// Sets up the stock config with `WITH_AUTH` on db_text and the README's lines, adds the
    /// subscriber the Debian way (`kamdbctl create`, `kamctl add`) and starts Kamailio.
    fn start(lab: &Lab, dir: &Path, syslog: &Rsyslog) -> Kamailio {
        std::fs::create_dir_all(dir).unwrap();
        let db = dir.join("db");
        // kamctl reads ~/.kamctlrc last, after /etc/kamailio/kamctlrc.
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".kamctlrc"),
            format!(
                "DBENGINE=DBTEXT\nDB_PATH={}\nSIP_DOMAIN={PBX}\n",
                db.display()
            ),
        )
        .unwrap();
        let mut create = Command::new("kamdbctl")
            .arg("create")
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kamdbctl (Debian package kamailio; cargo xtask setup installs it)");
        // "Install presence related tables?", "Install tables for imc cpl ...?": no.
        create
            .stdin
            .take()
            .unwrap()
            .write_all("n\n".repeat(8).as_bytes())
            .unwrap();
        check("kamdbctl create", create.wait_with_output().unwrap());
        check(
            "kamctl add",
            Command::new("kamctl")
                .args(["add", USER, PASSWORD])
                .env("HOME", &home)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        );

        // The stock config, untouched but for the README's lines; the local settings go in
        // kamailio-local.cfg, which the stock config imports first.
        let stock = stock_config();
        assert!(
            stock.contains("log_prefix=\"{$mt $hdr(CSeq) $ci} \""),
            "Debian's kamailio.cfg sets the stock log_prefix"
        );
        assert_eq!(stock.matches(STOCK_AUTH).count(), 1, "stock route[AUTH]");
        std::fs::write(
            dir.join("kamailio.cfg"),
            stock.replace(STOCK_AUTH, &readme_recipe()),
        )
        .unwrap();
        std::fs::write(
            dir.join("kamailio-local.cfg"),
            format!(
                "#!define WITH_AUTH\n#!define DBURL \"text://{}\"\nloadmodule \"db_text.so\"\n",
                db.display()
            ),
        )
        .unwrap();
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();

        let child = Command::new("nsenter")
            .arg(format!("--net={}", lab.inside.path().display()))
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["/bin/sh", "-c", PRIVATE_DEV, "sh"])
            .arg(dir)
            .arg(&syslog.socket)
            .args(["/usr/sbin/kamailio", "-DD", "-m", "64", "-M", "8", "-f"])
            .arg(dir.join("kamailio.cfg"))
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("kamailio.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("kamailio.err")).unwrap())
            .spawn()
            .unwrap();
        let mut kamailio = Kamailio {
            child,
            dir: dir.to_path_buf(),
        };
        let inside = lab.inside.path();
        wait_until("Kamailio listening on 5060/udp", || {
            if let Some(status) = kamailio.child.try_wait().unwrap() {
                panic!(
                    "kamailio exited with {status}: {}",
                    std::fs::read_to_string(kamailio.dir.join("kamailio.err")).unwrap_or_default()
                );
            }
            let out = Command::new("nsenter")
                .arg(format!("--net={}", inside.display()))
                .args(["ss", "-Hlun", "sport = :5060"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&format!("{PBX}:5060"))
        });
        kamailio
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // The whole process group: the main process and its workers.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn check(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `ready` (bounded).
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A registration: REGISTER, the 401 challenge, REGISTER with digest credentials from the
/// injection file, then `answer` (200 for the phone, 401 for a wrong password).
fn scenario(user_agent: &str, answer: u16) -> String {
    let register = |cseq: u32, auth: &str| {
        format!(
            "  <send retrans=\"500\">\n    <![CDATA[\n\n\
      REGISTER sip:[remote_ip] SIP/2.0\n\
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
      Max-Forwards: 70\n\
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]\n\
      To: <sip:[field0]@[remote_ip]>\n\
      Call-ID: [call_id]\n\
      CSeq: {cseq} REGISTER\n\
      Contact: <sip:[field0]@[local_ip]:[local_port]>\n{auth}\
      Expires: 60\n\
      User-Agent: {user_agent}\n\
      Content-Length: 0\n\n    ]]>\n  </send>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"register\">\n{}  <recv response=\"401\" auth=\"true\"/>\n{}  <recv response=\"{answer}\"/>\n</scenario>\n",
        register(1, ""),
        register(2, "      [field1]\n"),
    )
}

/// A sipp injection file: one call per password, `user;[authentication ...]` (sipp reads
/// the keyword from the field).
fn injection(passwords: &[impl AsRef<str>]) -> String {
    let mut text = String::from("SEQUENTIAL\n");
    for password in passwords {
        text.push_str(&format!(
            "{USER};[authentication username={USER} password={}]\n",
            password.as_ref()
        ));
    }
    text
}

/// Runs sipp from `from` in the outside namespace against Kamailio; each call gives up after
/// a second without an answer. sipp exits with 0 when every call succeeded, 1 when one
/// failed.
fn sipp(lab: &Lab, dir: &Path, from: Ipv4Addr, port: u16, name: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.outside.name, "timeout", "120", "sipp"])
        .arg(format!("{PBX}:5060"))
        .arg("-sf")
        .arg(dir.join(format!("{name}.xml")))
        .arg("-inf")
        .arg(dir.join(format!("{name}.csv")))
        .args(["-i", &from.to_string(), "-p", &port.to_string()])
        .args(["-nostdin", "-recv_timeout", "1000", "-timeout", "90s"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("sipp (Debian package sip-tester; cargo xtask setup installs it)")
}

fn sipp_report(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One REGISTER from `socket` with `call_id` (raw bytes: NUL, line breaks...) and an
/// optional Authorization header; Kamailio's answer, if one came within a second.
fn register(socket: &UdpSocket, call_id: &[u8], cseq: u32, auth: &str) -> Option<String> {
    let local = socket.local_addr().unwrap();
    let mut message = format!(
        "REGISTER sip:{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-evader-{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{USER}@{PBX}>;tag=evader-{cseq}\r\nTo: <sip:{USER}@{PBX}>\r\n\
         Call-ID: "
    )
    .into_bytes();
    message.extend_from_slice(call_id);
    message.extend_from_slice(
        format!(
            "\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{USER}@{local}>\r\n{auth}\
             User-Agent: Polycom VVX 410 UA/6.4.3\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    socket
        .send_to(&message, SocketAddr::from((PBX, 5060)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A password guess without sipp: REGISTER, then REGISTER again with the 401's nonce and a
/// digest response that is simply wrong (to Kamailio, a wrong password). Whether Kamailio
/// answered both, the second with another 401.
fn guess(socket: &UdpSocket, call_id: &[u8], attempt: u32) -> bool {
    let Some(challenge) = register(socket, call_id, attempt * 2, "") else {
        return false;
    };
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no nonce in {challenge}"));
    let auth = format!(
        "Authorization: Digest username=\"{USER}\", realm=\"{PBX}\", nonce=\"{nonce}\", \
         uri=\"sip:{PBX}\", response=\"{:032x}\", qop=auth, nc=00000001, cnonce=\"evader\", \
         algorithm=MD5\r\n",
        attempt
    );
    let answer = register(socket, call_id, attempt * 2 + 1, &auth)
        .unwrap_or_else(|| panic!("guess {attempt} got no answer"));
    assert!(answer.starts_with("SIP/2.0 401"), "{answer}");
    true
}

/// Lines of the syslog file that end with `tail`.
fn lines_ending(syslog: &Path, tail: &str) -> usize {
    std::fs::read_to_string(syslog)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(tail))
        .count()
}

fn cracker_is_banned_and_the_phone_keeps_registering(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        backend,
        &format!(
            "[policy]\nmaxretry = {MAXRETRY}\nfindtime = \"10m\"\nbantime = \"1h\"\n\n\
             [[source]]\npath = \"LOG\"\nfilters = [\"kamailio\"]\n"
        ),
    );
    let syslog_file = daemon.log_file("syslog");
    let work = daemon.dir.path().to_path_buf();
    let rsyslog = Rsyslog::start(&work.join("rsyslog"), &syslog_file);
    let _kamailio = Kamailio::start(&lab, &work.join("kamailio"), &rsyslog);
    daemon.launch(&[]);
    let syslog = || std::fs::read_to_string(&syslog_file).unwrap();

    // The phone's password and a cracker's list of guesses, as sipp injection files.
    let sipp_dir = work.join("sipp");
    std::fs::create_dir_all(&sipp_dir).unwrap();
    let write = |name: &str, text: String| std::fs::write(sipp_dir.join(name), text).unwrap();
    write("phone.xml", scenario("Yealink SIP-T46S 66.86.0.15", 200));
    write("phone.csv", injection(&[PASSWORD]));
    write("cracker.xml", scenario("Grandstream GXP2170 1.0.11.3", 401));
    let guesses: Vec<String> = (1..=GUESSES).map(|i| format!("guess-{i}")).collect();
    write("cracker.csv", injection(&guesses));
    // The stock log_prefix prints the caller's Call-ID in front of every line: this one
    // copies a whole pbxguard line with the phone's address.
    let forged_call_id = format!("%u-%p@%s}} <script>: pbxguard: auth-failed src={PHONE}");

    // The chain works before any attack: the phone registers, and Kamailio says so in syslog.
    let phone = sipp(&lab, &sipp_dir, PHONE, 5070, "phone", &["-m", "1"]);
    assert_eq!(phone.status.code(), Some(0), "{}", sipp_report(&phone));
    let phone_ok = format!("<script>: pbxguard: auth-ok src={PHONE}");
    wait_until("the phone's auth-ok line in syslog", || {
        lines_ending(&syslog_file, &phone_ok) == 1
    });

    // The phone keeps registering, once a second, while the cracker guesses.
    let (phone, cracker) = std::thread::scope(|s| {
        let phone = s.spawn(|| {
            sipp(
                &lab,
                &sipp_dir,
                PHONE,
                5071,
                "phone",
                &["-m", &PHONE_REGISTRATIONS.to_string(), "-r", "1", "-l", "1"],
            )
        });
        let cracker = s.spawn(|| {
            sipp(
                &lab,
                &sipp_dir,
                ATTACKER,
                5080,
                "cracker",
                &[
                    "-m",
                    &GUESSES.to_string(),
                    "-r",
                    "4",
                    "-l",
                    "1",
                    "-cid_str",
                    &forged_call_id,
                ],
            )
        });
        (phone.join().unwrap(), cracker.join().unwrap())
    });
    assert_eq!(
        phone.status.code(),
        Some(0),
        "every REGISTER of the phone succeeded: {}",
        sipp_report(&phone)
    );
    assert_eq!(
        cracker.status.code(),
        Some(1),
        "the cracker's later guesses got no answer: {}",
        sipp_report(&cracker)
    );

    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "kamailio", "{ban}");
    assert_eq!(ban["rule"], "auth_failed", "{ban}");
    assert_eq!(ban["failures"], MAXRETRY, "{ban}");
    let bans = daemon.json(&["bans", "list"]);
    assert_eq!(
        bans.as_array().unwrap().len(),
        1,
        "only the cracker is banned, never the phone its Call-ID names: {bans}"
    );

    // What reached Kamailio, from its own log lines: the cracker's guesses stopped a few
    // after maxretry (each one had the phone's address in front of it), the phone never
    // failed and registered every time.
    let cracker_failed = format!("<script>: pbxguard: auth-failed src={ATTACKER}");
    let guessed = lines_ending(&syslog_file, &cracker_failed);
    assert!(
        (MAXRETRY..=MAXRETRY + SLACK).contains(&guessed),
        "{guessed} guesses reached Kamailio (maxretry {MAXRETRY}):\n{}",
        syslog()
    );
    let text = syslog();
    assert!(
        text.lines()
            .filter(|l| l.ends_with(&cracker_failed))
            .all(|l| l.contains(&format!("auth-failed src={PHONE}}} <script>:"))),
        "every guess carried the forged line in the stock log_prefix:\n{text}"
    );
    assert_eq!(
        lines_ending(&syslog_file, &format!("auth-failed src={PHONE}")),
        0,
        "{text}"
    );
    assert_eq!(
        lines_ending(&syslog_file, &phone_ok),
        1 + PHONE_REGISTRATIONS,
        "{text}"
    );

    // From now on the cracker's packets are dropped before Kamailio sees them; the phone
    // still registers.
    let dropped = daemon.packets("banned");
    let again = sipp(&lab, &sipp_dir, ATTACKER, 5081, "cracker", &["-m", "2"]);
    assert_eq!(again.status.code(), Some(1), "{}", sipp_report(&again));
    assert!(
        daemon.packets("banned") > dropped,
        "the cracker's REGISTERs are dropped in the kernel"
    );
    let phone = sipp(&lab, &sipp_dir, PHONE, 5072, "phone", &["-m", "2"]);
    assert_eq!(phone.status.code(), Some(0), "{}", sipp_report(&phone));
    wait_until("the phone's last auth-ok lines", || {
        lines_ending(&syslog_file, &phone_ok) == 3 + PHONE_REGISTRATIONS
    });
    assert_eq!(
        lines_ending(&syslog_file, &cracker_failed),
        guessed,
        "no guess reached Kamailio after the ban"
    );

    // Call-IDs that try to keep the failure line from matching, through the stock
    // log_prefix: a NUL (Kamailio cuts the prefix there, closing brace and all), a folded
    // line, a tab, one too long for Kamailio's prefix buffer, stray braces. Every guess
    // still counts: banned at maxretry, then dropped.
    lab.add_outside_address(EVADER);
    let socket = lab.outside.enter(|| {
        let socket = UdpSocket::bind((EVADER, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        socket
    });
    let phone_line = format!("<script>: pbxguard: auth-failed src={PHONE}");
    let call_ids: [Vec<u8>; MAXRETRY] = [
        format!("evader-1\0x}} {phone_line}").into_bytes(),
        format!("evader-2\r\n {phone_line}").into_bytes(),
        format!("evader-3\tx}} {phone_line}").into_bytes(),
        vec![b'e'; 2000],
        b"evader-5}}}} {{{{ <script>:".to_vec(),
    ];
    for (attempt, call_id) in (1..).zip(&call_ids) {
        assert!(guess(&socket, call_id, attempt), "guess {attempt} answered");
    }
    let ban = daemon.wait_for_ban(&format!("{EVADER}/32"));
    assert_eq!(ban["rule"], "auth_failed", "{ban}");
    assert_eq!(ban["failures"], MAXRETRY, "{ban}");
    assert!(
        !guess(&socket, b"evader-6", 6),
        "the evader is dropped once banned"
    );
    let bans = daemon.json(&["bans", "list"]);
    assert_eq!(bans.as_array().unwrap().len(), 2, "{bans}");
    daemon.check_ledger();
}

both_backends!(cracker_is_banned_and_the_phone_keeps_registering);
