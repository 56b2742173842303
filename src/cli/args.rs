//! The command line (README.md): subcommands, flags, and a `PIPESTAT_<FLAG>` environment
//! variable behind every flag. A flag on the command line wins over its variable.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::error::{Error, Result};
use crate::model::times;
use crate::server;
use crate::surfaces::Settings;

pub const USAGE: &str = "\
pipestat — CI/CD statistics from one binary and one SQLite file

Usage:
  pipestat serve [--db PATH] [--listen ADDR] [--threads N] [--utc-offset +HH:MM] [--demo]
                 [--quota-per-minute N] [--max-body BYTES] [--insecure-open]
                 [--github-secret S] [--gitlab-secret S] [--now TIME]
                 [--incident-label NAME] [--incident-window DURATION]
  pipestat token create --name NAME --scope read,ingest,admin [--db PATH]
  pipestat token list [--db PATH]
  pipestat token revoke NAME [--db PATH]
  pipestat import FILE|- [--db PATH]
  pipestat demo [--runs N] [--days D] [--seed S] [--now TIME] [--db PATH]
  pipestat backup DEST [--db PATH]
  pipestat check [--db PATH]
  pipestat --help | --version

Every flag can also be set by an environment variable: --max-body is PIPESTAT_MAX_BODY.
Defaults: --db ./pipestat.db, --listen 127.0.0.1:8080, --threads = 4 per CPU (at least 2),
--utc-offset +00:00, --quota-per-minute 600 (0 = off), --max-body 16777216,
--incident-label incident, --incident-window 72h (DURATION: a number with s, m, h or d).
TIME is RFC 3339 or Unix seconds; --now replaces the clock (for reproducible demos and tests).
";

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
    Help,
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

/// Value flags and switches every subcommand knows; a subcommand rejects the ones it does not use.
const VALUE_FLAGS: &[&str] = &[
    "db",
    "listen",
    "threads",
    "utc-offset",
    "quota-per-minute",
    "max-body",
    "github-secret",
    "gitlab-secret",
    "now",
    "name",
    "scope",
    "runs",
    "days",
    "seed",
    "incident-label",
    "incident-window",
];
const SWITCHES: &[&str] = &["demo", "insecure-open"];

fn env_name(flag: &str) -> String {
    format!("PIPESTAT_{}", flag.to_uppercase().replace('-', "_"))
}

/// Parses the command line (without the program name) with `env` as the variable lookup.
pub fn parse(args: Vec<OsString>, env: impl Fn(&str) -> Option<String>) -> Result<Command> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut positional: Vec<String> = Vec::new();
    let mut cli = Flags::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(name) => {
                let name = name.to_owned();
                if let Some(flag) = VALUE_FLAGS.iter().find(|f| **f == name) {
                    let value = parser.value().map_err(usage)?;
                    let value = value
                        .into_string()
                        .map_err(|_| Error::Usage(format!("--{name}: not valid UTF-8")))?;
                    cli.set(flag, value);
                } else if let Some(flag) = SWITCHES.iter().find(|f| **f == name) {
                    cli.switches.push(flag);
                } else {
                    return Err(Error::Usage(format!("unknown flag --{name}")));
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
    for flag in VALUE_FLAGS {
        if let Some(v) = env(&env_name(flag)) {
            flags.set(flag, v);
        }
    }
    for flag in SWITCHES {
        if env(&env_name(flag)).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes")) {
            flags.switches.push(flag);
        }
    }
    for (n, v) in cli.values {
        flags.set(n, v);
    }
    flags.switches.extend(cli.switches);

    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    let db = PathBuf::from(flags.get("db").unwrap_or("pipestat.db"));
    let command = match words.as_slice() {
        ["serve"] => {
            allow(
                &given,
                &[
                    "db",
                    "listen",
                    "threads",
                    "utc-offset",
                    "quota-per-minute",
                    "max-body",
                    "github-secret",
                    "gitlab-secret",
                    "now",
                    "demo",
                    "insecure-open",
                    "incident-label",
                    "incident-window",
                ],
            )?;
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
                    github_secret: flags.get("github-secret").map(str::to_owned),
                    gitlab_secret: flags.get("gitlab-secret").map(str::to_owned),
                    now: parse_now(&flags)?,
                    incident_label: parse_incident_label(&flags)?,
                    incident_window_ms: parse_duration(&flags, "incident-window")?,
                },
            })
        }
        ["token", "create"] => {
            allow(&given, &["db", "name", "scope"])?;
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
        ["token", "list"] => {
            allow(&given, &["db"])?;
            Command::TokenList { db }
        }
        ["token", "revoke", name] => {
            allow(&given, &["db"])?;
            Command::TokenRevoke {
                db,
                name: (*name).to_owned(),
            }
        }
        ["import", file] => {
            allow(&given, &["db"])?;
            Command::Import {
                db,
                file: (*file).to_owned(),
            }
        }
        ["demo"] => {
            allow(&given, &["db", "runs", "days", "seed", "now"])?;
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
        ["backup", dest] => {
            allow(&given, &["db"])?;
            Command::Backup {
                db,
                dest: PathBuf::from(dest),
            }
        }
        ["check"] => {
            allow(&given, &["db"])?;
            Command::Check { db }
        }
        [] => return Err(Error::Usage("missing command; try pipestat --help".into())),
        other => {
            return Err(Error::Usage(format!(
                "unknown command {:?}; try pipestat --help",
                other.join(" ")
            )))
        }
    };
    Ok(command)
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
