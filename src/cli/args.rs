//! The command line (README.md): subcommands, flags, and a `PIPESTAT_<FLAG>` environment
//! variable behind every flag. A flag on the command line wins over its variable.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::error::{Error, Result};
use crate::model::times;
use crate::server;
use crate::store::db::Checkpoints;
use crate::surfaces::Settings;

pub const USAGE: &str = "\
pipestat — CI/CD statistics from one binary and one SQLite file

Usage:
  pipestat serve [--db PATH] [--listen ADDR] [--threads N] [--utc-offset +HH:MM] [--demo]
                 [--quota-per-minute N] [--max-body BYTES] [--insecure-open]
                 [--github-secret S | --github-secret-file PATH]
                 [--gitlab-secret S | --gitlab-secret-file PATH] [--now TIME]
                 [--incident-label NAME] [--incident-window DURATION]
  pipestat token create --name NAME --scope read,ingest,admin [--db PATH]
  pipestat token list [--db PATH]
  pipestat token revoke NAME [--db PATH]
  pipestat import FILE|- [--db PATH]
  pipestat demo [--runs N] [--days D] [--seed S] [--now TIME] [--db PATH]
  pipestat backup DEST [--db PATH]
  pipestat check [--db PATH]
  pipestat --help | --version

`pipestat COMMAND --help` describes a command and every flag it takes.
Every flag can also be set by an environment variable: --max-body is PIPESTAT_MAX_BODY.
Every command that opens the database takes --checkpoints pipestat|litestream (default pipestat):
litestream leaves every checkpoint of the WAL to Litestream, which replicates the database.
Defaults: --db ./pipestat.db, --listen 127.0.0.1:8080, --threads = 4 per CPU (at least 2),
--utc-offset +00:00, --quota-per-minute 600 (0 = off), --max-body 16777216,
--incident-label incident, --incident-window 72h (DURATION: a number with s, m, h or d).
TIME is RFC 3339 or Unix seconds; --now replaces the clock (for reproducible demos and tests).
";

/// A flag: its name, the placeholder of its value (None for a switch), and what it does.
struct FlagDoc {
    name: &'static str,
    value: Option<&'static str>,
    about: &'static str,
}

const fn flag(name: &'static str, value: &'static str, about: &'static str) -> FlagDoc {
    FlagDoc {
        name,
        value: Some(value),
        about,
    }
}

const fn switch(name: &'static str, about: &'static str) -> FlagDoc {
    FlagDoc {
        name,
        value: None,
        about,
    }
}

/// Every flag of every command.
const FLAGS: &[FlagDoc] = &[
    flag("db", "PATH", "the SQLite file (default ./pipestat.db)"),
    flag(
        "listen",
        "ADDR",
        "IP:PORT to serve (default 127.0.0.1:8080; port 0 picks a free one)",
    ),
    flag(
        "threads",
        "N",
        "HTTP worker threads (default 4 per CPU, at least 2, at most 256)",
    ),
    flag(
        "utc-offset",
        "+HH:MM",
        "where calendar days begin for daily statistics (default +00:00)",
    ),
    flag(
        "quota-per-minute",
        "N",
        "requests per token per minute; 0 turns the quota off (default 600)",
    ),
    flag(
        "max-body",
        "BYTES",
        "larger request bodies get 413 (default 16777216)",
    ),
    flag(
        "github-secret",
        "S",
        "secret of the GitHub webhook (visible in `ps`: prefer --github-secret-file)",
    ),
    flag(
        "github-secret-file",
        "PATH",
        "a file holding the GitHub webhook's secret (one trailing newline ignored)",
    ),
    flag(
        "gitlab-secret",
        "S",
        "secret token of the GitLab webhook (visible in `ps`: prefer --gitlab-secret-file)",
    ),
    flag(
        "gitlab-secret-file",
        "PATH",
        "a file holding the GitLab webhook's secret token (one trailing newline ignored)",
    ),
    flag(
        "now",
        "TIME",
        "a fixed \"now\" (RFC 3339 or Unix seconds), for reproducible demos and tests",
    ),
    flag(
        "incident-label",
        "NAME",
        "issues carrying this label, in any case, are incidents for DORA (default incident)",
    ),
    flag(
        "incident-window",
        "DURATION",
        "an incident linked to no deployment is blamed on the latest production deployment at \
         most this long before it: a number with s, m, h or d, up to 365d (default 72h)",
    ),
    flag(
        "checkpoints",
        "WHO",
        "who checkpoints the WAL: pipestat (default), or litestream when Litestream replicates \
         the database (pipestat then never checkpoints)",
    ),
    flag("name", "NAME", "the token's name, 1..256 characters"),
    flag("scope", "SCOPES", "a comma list of read, ingest, admin"),
    flag(
        "runs",
        "N",
        "how many runs to generate (default: a realistic number for --days)",
    ),
    flag(
        "days",
        "D",
        "days of history, ending now (1..3660, default 90)",
    ),
    flag(
        "seed",
        "S",
        "seed of the generator: the same seed makes the same data (default 42)",
    ),
    switch(
        "demo",
        "fill an empty database with 90 days of generated data first",
    ),
    switch(
        "insecure-open",
        "allow serving a non-loopback address with no token (logged loudly)",
    ),
];

/// A command: the words that name it, its positional arguments (name, what it is), what it
/// does, and the flags it takes.
struct Spec {
    words: &'static [&'static str],
    args: &'static [(&'static str, &'static str)],
    about: &'static str,
    flags: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        words: &["serve"],
        args: &[],
        about: "Runs the daemon. Prints `listening on http://IP:PORT` once the socket is bound.",
        flags: &[
            "db",
            "listen",
            "threads",
            "utc-offset",
            "quota-per-minute",
            "max-body",
            "github-secret",
            "github-secret-file",
            "gitlab-secret",
            "gitlab-secret-file",
            "now",
            "demo",
            "insecure-open",
            "incident-label",
            "incident-window",
            "checkpoints",
        ],
    },
    Spec {
        words: &["token", "create"],
        args: &[],
        about: "Creates an API token; prints its secret once, alone, as the last line. Creates the database when missing.",
        flags: &["name", "scope", "db", "checkpoints"],
    },
    Spec {
        words: &["token", "list"],
        args: &[],
        about: "Lists the tokens (names, scopes, creation times; never a secret).",
        flags: &["db", "checkpoints"],
    },
    Spec {
        words: &["token", "revoke"],
        args: &[("NAME", "the name of the token to revoke")],
        about: "Revokes a token.",
        flags: &["db", "checkpoints"],
    },
    Spec {
        words: &["import"],
        args: &[("FILE", "NDJSON, one run a line, or - for standard input")],
        about: "Bulk-loads runs. A bad line is reported with its line number (from 1) and skipped; \
                the rest lands, and the exit code is 1 when any line was skipped.",
        flags: &["db", "checkpoints"],
    },
    Spec {
        words: &["demo"],
        args: &[],
        about: "Fills the database with generated, realistic data (deterministic for a seed).",
        flags: &["runs", "days", "seed", "now", "db", "checkpoints"],
    },
    Spec {
        words: &["backup"],
        args: &[("DEST", "the copy's path; must not exist yet")],
        about: "Copies the live database consistently (one read snapshot, safe while serve runs) \
                to a temporary file beside DEST, flushes it, then gives it DEST's name.",
        flags: &["db", "checkpoints"],
    },
    Spec {
        words: &["check"],
        args: &[],
        about: "Checks the database file's integrity; exit 0 when sound.",
        flags: &["db", "checkpoints"],
    },
];

/// `text` broken into lines of at most `width` characters, each ending in a line break.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The help of the commands named by `words` (all of `token`'s for `token`), or the general
/// usage.
fn help(words: &[&str]) -> String {
    let specs: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| {
            !words.is_empty()
                && s.words
                    .starts_with(&words[..words.len().min(s.words.len())])
        })
        .collect();
    if specs.is_empty() {
        return USAGE.to_owned();
    }
    let mut out = String::new();
    for spec in specs {
        let mut line = format!("Usage: pipestat {}", spec.words.join(" "));
        for (name, _) in spec.args {
            line.push_str(&format!(" {name}"));
        }
        line.push_str(" [FLAGS]");
        out.push_str(&format!("{line}\n\n{}", wrap(spec.about, 92)));
        if !spec.args.is_empty() {
            out.push_str("\nArguments:\n");
            for (name, about) in spec.args {
                out.push_str(&format!("  {name:<28} {about}\n"));
            }
        }
        out.push_str("\nFlags (each also read from the environment variable named after it):\n");
        for name in spec.flags {
            let f = FLAGS
                .iter()
                .find(|f| f.name == *name)
                .expect("documented flag");
            let head = match f.value {
                Some(v) => format!("--{} {v}", f.name),
                None => format!("--{}", f.name),
            };
            out.push_str(&format!(
                "  {head:<28} {} [{}]\n",
                f.about,
                env_name(f.name)
            ));
        }
        out.push_str(&format!("  {:<28} this help\n\n", "-h, --help"));
    }
    out
}

#[derive(Debug, Clone)]
pub struct Demo {
    pub db: PathBuf,
    pub runs: Option<u64>,
    pub days: u32,
    pub seed: u64,
    pub now: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Command {
    Serve(server::Config),
    TokenCreate {
        db: PathBuf,
        name: String,
        scopes: String,
    },
    TokenList {
        db: PathBuf,
    },
    TokenRevoke {
        db: PathBuf,
        name: String,
    },
    Import {
        db: PathBuf,
        file: String,
    },
    Demo(Demo),
    Backup {
        db: PathBuf,
        dest: PathBuf,
    },
    Check {
        db: PathBuf,
    },
    /// The help text asked for.
    Help(String),
    Version,
}

/// Flag values gathered from the environment first, then from the command line.
#[derive(Default)]
struct Flags {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
}

impl Flags {
    fn set(&mut self, name: &'static str, value: String) {
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value));
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Usage(format!("--{name}: expected {what}, got {v:?}")))
            })
            .transpose()
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}

fn env_name(flag: &str) -> String {
    format!("PIPESTAT_{}", flag.to_uppercase().replace('-', "_"))
}

/// Parses the command line (without the program name) with `env` as the variable lookup: the
/// command, and who checkpoints the WAL (`--checkpoints`).
pub fn parse(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Command, Checkpoints)> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut positional: Vec<String> = Vec::new();
    let mut cli = Flags::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => {
                let words: Vec<&str> = positional.iter().map(String::as_str).collect();
                return Ok((Command::Help(help(&words)), Checkpoints::Pipestat));
            }
            Short('V') | Long("version") => return Ok((Command::Version, Checkpoints::Pipestat)),
            Long(name) => {
                let name = name.to_owned();
                match FLAGS.iter().find(|f| f.name == name) {
                    Some(f) if f.value.is_some() => {
                        let value = parser.value().map_err(usage)?;
                        let value = value
                            .into_string()
                            .map_err(|_| Error::Usage(format!("--{name}: not valid UTF-8")))?;
                        cli.set(f.name, value);
                    }
                    Some(f) => cli.switches.push(f.name),
                    None => return Err(Error::Usage(format!("unknown flag --{name}"))),
                }
            }
            Value(v) => positional.push(
                v.into_string()
                    .map_err(|_| Error::Usage("argument is not valid UTF-8".into()))?,
            ),
            other => return Err(usage(other.unexpected())),
        }
    }
    let given: Vec<&'static str> = cli
        .values
        .iter()
        .map(|(n, _)| *n)
        .chain(cli.switches.iter().copied())
        .collect();
    // Environment first, then the command line on top.
    let mut flags = Flags::default();
    for f in FLAGS {
        match env(&env_name(f.name)) {
            Some(v) if f.value.is_some() => flags.set(f.name, v),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes") => flags.switches.push(f.name),
            _ => {}
        }
    }
    for (n, v) in cli.values {
        flags.set(n, v);
    }
    flags.switches.extend(cli.switches);

    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    let (spec, rest) = find_spec(&words)?;
    allow(&given, spec.flags)?;
    let db = PathBuf::from(flags.get("db").unwrap_or("pipestat.db"));
    let checkpoints = parse_checkpoints(&flags)?;
    let command = match (spec.words, rest) {
        (["serve"], []) => {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let threads = flags
                .parse::<usize>("threads", "a number of threads")?
                .unwrap_or(4 * cpus)
                .max(2);
            if threads > 256 {
                return Err(Error::Usage("--threads: at most 256".into()));
            }
            let utc_offset = match flags.get("utc-offset") {
                None => 0,
                Some(v) => times::parse_utc_offset(v).ok_or_else(|| {
                    Error::Usage(format!(
                        "--utc-offset: expected +HH:MM or -HH:MM, got {v:?}"
                    ))
                })?,
            };
            let max_body = flags
                .parse::<u64>("max-body", "a size in bytes")?
                .unwrap_or(16 << 20);
            if max_body == 0 {
                return Err(Error::Usage("--max-body: must be at least 1".into()));
            }
            Command::Serve(server::Config {
                db,
                listen: flags.get("listen").unwrap_or("127.0.0.1:8080").to_owned(),
                threads,
                demo: flags.switch("demo"),
                quota_per_minute: flags
                    .parse::<u32>("quota-per-minute", "a number of requests")?
                    .unwrap_or(600),
                max_body,
                insecure_open: flags.switch("insecure-open"),
                settings: Settings {
                    utc_offset,
                    github_secret: secret(&flags, &given, "github-secret")?,
                    gitlab_secret: secret(&flags, &given, "gitlab-secret")?,
                    now: parse_now(&flags)?,
                    incident_label: parse_incident_label(&flags)?,
                    incident_window_ms: parse_duration(&flags, "incident-window")?,
                },
            })
        }
        (["token", "create"], []) => {
            let name = flags
                .get("name")
                .ok_or_else(|| Error::Usage("token create: --name is required".into()))?;
            let scopes = flags
                .get("scope")
                .ok_or_else(|| Error::Usage("token create: --scope is required".into()))?;
            Command::TokenCreate {
                db,
                name: name.to_owned(),
                scopes: scopes.to_owned(),
            }
        }
        (["token", "list"], []) => Command::TokenList { db },
        (["token", "revoke"], [name]) => Command::TokenRevoke {
            db,
            name: (*name).to_owned(),
        },
        (["import"], [file]) => Command::Import {
            db,
            file: (*file).to_owned(),
        },
        (["demo"], []) => {
            let days = flags
                .parse::<u32>("days", "a number of days")?
                .unwrap_or(90);
            if !(1..=3660).contains(&days) {
                return Err(Error::Usage("--days: expected 1..3660".into()));
            }
            Command::Demo(Demo {
                db,
                runs: flags.parse::<u64>("runs", "a number of runs")?,
                days,
                seed: flags.parse::<u64>("seed", "an integer seed")?.unwrap_or(42),
                now: parse_now(&flags)?,
            })
        }
        (["backup"], [dest]) => Command::Backup {
            db,
            dest: PathBuf::from(dest),
        },
        (["check"], []) => Command::Check { db },
        _ => unreachable!("find_spec checked the arguments"),
    };
    Ok((command, checkpoints))
}

/// `--checkpoints`: pipestat (the default) or litestream.
fn parse_checkpoints(flags: &Flags) -> Result<Checkpoints> {
    let Some(v) = flags.get("checkpoints") else {
        return Ok(Checkpoints::Pipestat);
    };
    Checkpoints::WORDS
        .iter()
        .find(|(word, _)| *word == v)
        .map(|(_, who)| *who)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--checkpoints: expected pipestat or litestream, got {v:?}"
            ))
        })
}

/// The command `words` name, and its positional arguments: exactly as many as it takes, or a
/// usage error naming the missing or unexpected one.
fn find_spec<'w>(words: &'w [&'w str]) -> Result<(&'static Spec, &'w [&'w str])> {
    let Some(first) = words.first() else {
        return Err(Error::Usage("missing command; try pipestat --help".into()));
    };
    let Some(spec) = SPECS.iter().find(|s| words.starts_with(s.words)) else {
        let group: Vec<&str> = SPECS
            .iter()
            .filter(|s| s.words.len() > 1 && s.words[0] == *first)
            .map(|s| s.words[1])
            .collect();
        return Err(Error::Usage(match (group.is_empty(), words.get(1)) {
            (true, _) => format!("unknown command {:?}; try pipestat --help", words.join(" ")),
            (false, None) => format!(
                "{first}: missing the subcommand, one of {}",
                group.join(", ")
            ),
            (false, Some(sub)) => format!(
                "{first}: unknown subcommand {sub:?}; expected one of {}",
                group.join(", ")
            ),
        }));
    };
    let rest = &words[spec.words.len()..];
    let name = spec.words.join(" ");
    if let Some((arg, about)) = spec.args.get(rest.len()) {
        return Err(Error::Usage(format!(
            "{name}: missing the {arg} argument ({about}); try pipestat {name} --help"
        )));
    }
    if let Some(extra) = rest.get(spec.args.len()) {
        return Err(Error::Usage(format!(
            "{name}: unexpected argument {extra:?}; try pipestat {name} --help"
        )));
    }
    Ok((spec, rest))
}

/// A webhook secret from `--NAME` or `--NAME-file` (or their variables). A flag given on the
/// command line hides the other form's variable; both forms from the same place are a usage
/// error. The file's content is the secret, without its trailing line break.
fn secret(flags: &Flags, given: &[&str], name: &'static str) -> Result<Option<String>> {
    let file_flag = match name {
        "github-secret" => "github-secret-file",
        _ => "gitlab-secret-file",
    };
    let (direct, file) = (flags.get(name), flags.get(file_flag));
    let (on_line, file_on_line) = (given.contains(&name), given.contains(&file_flag));
    let (direct, file) = match (direct, file) {
        (Some(_), Some(_)) if on_line == file_on_line => {
            return Err(Error::Usage(format!(
                "--{name} and --{file_flag} both given ({} and {}): give one",
                env_name(name),
                env_name(file_flag)
            )))
        }
        (Some(_), Some(_)) if on_line => (direct, None),
        (Some(_), Some(_)) => (None, file),
        other => other,
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Internal(format!("--{file_flag}: cannot read {path}: {e}")))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            // A file given on purpose but empty is a mistake, not a way to turn the hook off.
            return Err(Error::Usage(format!("--{file_flag}: {path} is empty")));
        }
        return Ok(Some(text.to_owned()));
    }
    // An empty secret given directly is no secret: the webhook then answers how to set one.
    Ok(direct.map(str::to_owned))
}

fn parse_now(flags: &Flags) -> Result<Option<i64>> {
    flags
        .get("now")
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .and_then(times::from_unix_seconds)
                .or_else(|| times::parse_rfc3339(v))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--now: expected RFC 3339 or Unix seconds, got {v:?}"
                    ))
                })
        })
        .transpose()
}

/// `--incident-label`: a label name, 1..256 bytes.
fn parse_incident_label(flags: &Flags) -> Result<Option<String>> {
    match flags.get("incident-label") {
        Some(v) if v.trim().is_empty() || v.len() > 256 => Err(Error::Usage(format!(
            "--incident-label: expected a label name, got {v:?}"
        ))),
        v => Ok(v.map(str::to_owned)),
    }
}

/// A duration flag: a whole number with a unit, s, m, h or d (`72h`, `3d`), up to 365 days;
/// milliseconds.
fn parse_duration(flags: &Flags, name: &str) -> Result<Option<i64>> {
    let Some(v) = flags.get(name) else {
        return Ok(None);
    };
    let bad = || {
        Error::Usage(format!("--{name}: expected a duration such as 72h, 3d or 90m (s, m, h, d; up to 365d), got {v:?}"))
    };
    let unit_ms = match v.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => return Err(bad()),
    };
    let n: i64 = v[..v.len() - 1].parse().map_err(|_| bad())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if !(0..=365 * 86_400_000).contains(&ms) {
        return Err(bad());
    }
    Ok(Some(ms))
}

/// Rejects a command-line flag the subcommand does not take. Environment variables for other
/// subcommands' flags are ignored, so one environment can serve every subcommand.
fn allow(given: &[&str], allowed: &[&str]) -> Result<()> {
    match given.iter().find(|g| !allowed.contains(g)) {
        Some(flag) => Err(Error::Usage(format!(
            "--{flag} is not a flag of this command"
        ))),
        None => Ok(()),
    }
}

fn usage(e: lexopt::Error) -> Error {
    Error::Usage(e.to_string())
}
