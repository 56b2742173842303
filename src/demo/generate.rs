//! Demo data: a deterministic, fast generator of realistic CI history.
//!
//! `generate` invents the CI history of a small fictional company, "acme": runs with their jobs
//! and test cases, and Zadig-style rollbacks. It produces domain values only; the caller decides
//! what to do with each batch of runs. The same `Spec` always gives the same values.
//!
//! The model behind the numbers:
//! - Run creation times follow the team's rhythm (busy working hours, quiet nights and
//!   weekends, some days busier than others) plus a nightly schedule at 02:00 UTC. Times are
//!   drawn as ascending order statistics, so exactly the requested number of runs comes out in
//!   order without ever holding them all.
//! - Each project has a default branch and a rotating set of feature branches. Every branch has
//!   a current commit and a health: a new commit may break it, and it stays broken (every run
//!   fails the same way) until a later commit fixes it. This gives failure streaks and a
//!   meaningful time to recovery.
//! - Failed runs are often re-run on the same commit. A few tests per project are flaky: they
//!   fail about 10% of the time whatever the code, so the same test passes and fails on the same
//!   commit.
//! - Runs still in progress at `now_ms` are reported as running or queued.

use crate::model::{Job, Kind, Rollback, Run, Status, TestCase, TestOutcome};
use Workflow::{BuildTest, Deploy, Nightly, Release};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Total runs to generate; None = a realistic small-team volume (about 4,000–6,000 runs over 90 days).
    pub runs: Option<u64>,
    /// Days of history, ending at `now_ms`.
    pub days: u32,
    pub seed: u64,
    /// "Now" in UTC milliseconds; the newest run is created before it.
    pub now_ms: i64,
}

/// Calls `sink` with batches of runs (about `batch` runs each, the last may be smaller), in
/// created_at-ascending order overall, then returns the rollbacks. Stops at the first sink error.
///
/// A `days` of 0 is taken as 1, and a `batch` of 0 as 1.
pub fn generate<E>(
    spec: &Spec,
    batch: usize,
    mut sink: impl FnMut(Vec<Run>) -> Result<(), E>,
) -> Result<Vec<Rollback>, E> {
    let days = spec.days.max(1);
    let start = spec.now_ms - i64::from(days) * DAY_MS;
    let total = spec.runs.unwrap_or_else(|| default_volume(spec.seed, days));
    let defs: Vec<&'static ProjectDef> = if total >= 100_000 {
        PROJECTS.iter().collect()
    } else {
        PROJECTS.iter().filter(|d| d.small_weight > 0.0).collect()
    };
    let clock = Clock::new(spec.seed, start, spec.now_ms, NIGHTLY_SHARE);
    let mut generator = Generator::new(spec.seed, start, spec.now_ms, total, &defs);
    let mut order = Ascending {
        left: total,
        last: 0.0,
    };
    let batch = batch.max(1);
    let capacity = |left: u64| usize::try_from(left).unwrap_or(usize::MAX).min(batch);
    let mut runs = Vec::with_capacity(capacity(total));
    let mut last = start;
    for emitted in 0..total {
        let x = order.next(&mut generator.rng);
        let (t, scheduled_share) = clock.at(x);
        // Rounding may nudge a time a millisecond backwards; the order must never break.
        last = last.max(t);
        let scheduled = scheduled_share > 0.0 && generator.rng.chance(scheduled_share);
        runs.push(generator.run(last, scheduled));
        if runs.len() == batch {
            let next = Vec::with_capacity(capacity(total - emitted - 1));
            sink(std::mem::replace(&mut runs, next))?;
        }
    }
    if !runs.is_empty() {
        sink(runs)?;
    }
    // A rollback names its project by key, which only a project with runs makes known.
    let built: Vec<&'static ProjectDef> = generator
        .projects
        .iter()
        .filter(|p| p.numbers.iter().any(|&n| n > 0))
        .map(|p| p.def)
        .collect();
    Ok(rollbacks(spec.seed, days, &built, &clock))
}

/// The run volume of a small team: 45 to 65 runs a day, depending on the seed.
fn default_volume(seed: u64, days: u32) -> u64 {
    let per_day = Rng::new(seed, 3).range(45.0, 65.0);
    (per_day * f64::from(days)).round() as u64
}

/// A splitmix64 generator: tiny, fast and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    /// One of several independent streams for a seed.
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A uniform value in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform index in [0, n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A uniform whole number of milliseconds in [lo, hi).
    fn ms(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as usize) as i64
    }

    /// An approximately standard normal value: four uniforms summed and rescaled.
    fn normal(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 3f64.sqrt()
    }

    /// A log-normal value with the given median.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * exp(sigma * self.normal())
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * ln(1.0 - self.unit())
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    fn weighted(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().sum();
        let mut target = self.unit() * total;
        let mut chosen = 0;
        for (i, w) in weights.enumerate() {
            chosen = i;
            if target < w {
                break;
            }
            target -= w;
        }
        chosen
    }
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// e^x from basic arithmetic only. The platform's `exp` may differ in the last bit between
/// systems, and one differing bit can change the whole data set; IEEE addition, multiplication
/// and division cannot.
fn exp(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    let x = x.min(700.0);
    // x = k ln 2 + r with |r| <= ln 2 / 2. ln 2 is split in two (fdlibm's constants) so that
    // k times the high part is exact.
    let k = (x * std::f64::consts::LOG2_E).round();
    let ln2_hi = f64::from_bits(0x3fe6_2e42_fee0_0000);
    let ln2_lo = f64::from_bits(0x3dea_39ef_3579_3c76);
    let r = x - k * ln2_hi - k * ln2_lo;
    // Fourteen terms of the Taylor series reach full precision for |r| <= 0.35.
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..14 {
        term *= r / f64::from(i);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// ln x for a positive normal x, from basic arithmetic only (see `exp`).
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2 atanh s = 2 (s + s^3/3 + s^5/5 + ...) with |s| < 0.18: twelve terms suffice.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for i in 0..12 {
        sum += term / f64::from(2 * i + 1);
        term *= s2;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// Draws uniform values in [0, 1) in ascending order, one at a time, for a known count.
struct Ascending {
    left: u64,
    last: f64,
}

impl Ascending {
    fn next(&mut self, rng: &mut Rng) -> f64 {
        // The smallest of k uniforms on [last, 1) is last + (1 - last)(1 - U^(1/k)).
        let u = 1.0 - rng.unit();
        self.last = 1.0 - (1.0 - self.last) * exp(ln(u) / self.left as f64);
        self.left -= 1;
        self.last
    }
}

/// Relative activity per UTC hour of a working day: a European team, busy 09:00–17:00.
const HOURLY: [f64; 24] = [
    0.04, 0.03, 0.03, 0.03, 0.04, 0.06, 0.12, 0.30, 0.65, 0.95, 1.00, 1.00, 0.75, 0.90, 1.00, 1.00,
    0.95, 0.75, 0.45, 0.30, 0.22, 0.16, 0.10, 0.06,
];
/// Weekend activity relative to a weekday.
const WEEKEND: f64 = 0.18;
/// The UTC hour of the nightly schedule, and how long its burst of runs lasts.
const NIGHTLY_HOUR: i64 = 2;
const NIGHTLY_WINDOW_MS: i64 = 10 * MINUTE_MS;
/// The share of all runs that are scheduled nightly runs.
const NIGHTLY_SHARE: f64 = 0.035;

/// A stretch of time with a constant rate of new runs.
struct Bucket {
    start: i64,
    len: i64,
    /// Expected runs in the bucket, relative to the other buckets.
    weight: f64,
    /// The part of `weight` that is scheduled nightly runs.
    scheduled: f64,
}

/// The team's activity over the history, as a piecewise-constant rate of new runs.
struct Clock {
    buckets: Vec<Bucket>,
    /// `cum[i]` is the total weight of the buckets before bucket i.
    cum: Vec<f64>,
    now: i64,
}

impl Clock {
    fn new(seed: u64, start: i64, now: i64, scheduled_share: f64) -> Clock {
        let mut buckets = Vec::new();
        let mut t = start;
        while t < now {
            let hour_start = t.div_euclid(HOUR_MS) * HOUR_MS;
            let end = (hour_start + HOUR_MS).min(now);
            let day = t.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday; weekday 0 is Monday.
            let weekday = (day + 3).rem_euclid(7);
            let day_factor = if weekday >= 5 { WEEKEND } else { 1.0 };
            // Some days are busier than others, the same way for every run count.
            let noise = 0.75 + 0.5 * Rng::new(seed ^ mix(day as u64), 4).unit();
            let hour = t.rem_euclid(DAY_MS) / HOUR_MS;
            let rate = HOURLY[hour as usize] * day_factor * noise / HOUR_MS as f64;
            let full_hour = t == hour_start && end == hour_start + HOUR_MS;
            if hour == NIGHTLY_HOUR && full_hour {
                // The schedule fires at the top of the hour: its runs get a bucket of their own.
                let split = t + NIGHTLY_WINDOW_MS;
                buckets.push(Bucket::new(t, split, rate, 1.0));
                buckets.push(Bucket::new(split, end, rate, 0.0));
            } else {
                buckets.push(Bucket::new(t, end, rate, 0.0));
            }
            t = end;
        }
        // Give the nightly windows (marked with a scheduled weight of 1) their share of runs.
        let base: f64 = buckets.iter().map(|b| b.weight).sum();
        let windows = buckets.iter().filter(|b| b.scheduled > 0.0).count();
        if windows > 0 {
            let each = base * scheduled_share / (1.0 - scheduled_share) / windows as f64;
            for b in buckets.iter_mut().filter(|b| b.scheduled > 0.0) {
                b.scheduled = each;
                b.weight += each;
            }
        }
        let mut cum = Vec::with_capacity(buckets.len() + 1);
        let mut acc = 0.0;
        cum.push(acc);
        for b in &buckets {
            acc += b.weight;
            cum.push(acc);
        }
        Clock { buckets, cum, now }
    }

    /// The time at quantile `x` of the activity, and the chance that a run then is scheduled.
    fn at(&self, x: f64) -> (i64, f64) {
        let total = self.cum[self.buckets.len()];
        let target = x * total;
        let i = self
            .cum
            .partition_point(|&c| c <= target)
            .clamp(1, self.buckets.len())
            - 1;
        let b = &self.buckets[i];
        let frac = ((target - self.cum[i]) / b.weight).clamp(0.0, 1.0);
        let t = (b.start + (frac * b.len as f64) as i64).clamp(b.start, self.now - 1);
        (t, b.scheduled / b.weight)
    }
}

impl Bucket {
    fn new(start: i64, end: i64, rate: f64, scheduled: f64) -> Bucket {
        let len = end - start;
        Bucket {
            start,
            len,
            weight: rate * len as f64,
            scheduled,
        }
    }
}

/// A workflow (pipeline) kind; each project has two to four of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workflow {
    BuildTest,
    Deploy,
    Nightly,
    Release,
}

impl Workflow {
    fn name(self) -> &'static str {
        match self {
            BuildTest => "build-test",
            Deploy => "deploy",
            Nightly => "nightly",
            Release => "release",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a project names its tests.
#[derive(Clone, Copy)]
enum Style {
    /// JUnit: classes "com.acme.<key>.<Entity><suffix>", camelCase methods.
    Java(&'static str),
    /// pytest: modules "tests.test_<entities>", with files.
    Python,
    /// Jest: components, sentences as names, with files.
    Js,
    /// go test: packages "github.com/acme/<key>/<entity>", "TestXxx" names.
    Go,
}

/// A fictional repository of acme.
struct ProjectDef {
    slug: &'static str,
    key: &'static str,
    default_branch: &'static str,
    service: &'static str,
    style: Style,
    /// Four things the code is about, in PascalCase; tests are named after them.
    entities: [&'static str; 4],
    /// Share of runs with all ten projects.
    weight: f64,
    /// Share of runs with the four projects of a small data set; 0 leaves the project out.
    small_weight: f64,
    /// Share of the unscheduled runs that build the default branch.
    default_share: f64,
    /// Unscheduled workflows of default-branch runs, with their weights.
    workflows: &'static [(Workflow, f64)],
    /// Whether a nightly workflow runs on schedule.
    nightly: bool,
    /// How slow the builds are, relative to the typical project.
    speed: f64,
    /// Whether the service is deployed with Helm rather than plain Kubernetes manifests.
    helm: bool,
}

/// The projects: the first four make the small data set; the first one is the heaviest.
const PROJECTS: [ProjectDef; 10] = [
    ProjectDef {
        slug: "gh/acme/api",
        key: "api",
        default_branch: "main",
        service: "api",
        style: Style::Java("ServiceTest"),
        entities: ["User", "Order", "Session", "Token"],
        weight: 20.0,
        small_weight: 40.0,
        default_share: 0.26,
        workflows: &[(BuildTest, 0.6), (Deploy, 0.3), (Release, 0.1)],
        nightly: true,
        speed: 1.0,
        helm: false,
    },
    ProjectDef {
        slug: "gh/acme/web",
        key: "web",
        default_branch: "main",
        service: "web",
        style: Style::Js,
        entities: ["LoginForm", "Cart", "Checkout", "SearchBar"],
        weight: 15.0,
        small_weight: 28.0,
        default_share: 0.40,
        workflows: &[(BuildTest, 0.55), (Deploy, 0.45)],
        nightly: false,
        speed: 0.7,
        helm: false,
    },
    ProjectDef {
        slug: "gl/acme/platform/billing",
        key: "billing",
        default_branch: "master",
        service: "billing",
        style: Style::Python,
        entities: ["Invoice", "Payment", "Refund", "Discount"],
        weight: 12.0,
        small_weight: 20.0,
        default_share: 0.45,
        workflows: &[(BuildTest, 0.7), (Deploy, 0.3)],
        nightly: true,
        speed: 1.2,
        helm: true,
    },
    ProjectDef {
        slug: "bb/acme/mobile",
        key: "mobile",
        default_branch: "main",
        service: "mobile-bff",
        style: Style::Java("ViewModelTest"),
        entities: ["Login", "Feed", "Settings", "Sync"],
        weight: 10.0,
        small_weight: 12.0,
        default_share: 0.35,
        workflows: &[(BuildTest, 0.8), (Release, 0.2)],
        nightly: false,
        speed: 1.4,
        helm: false,
    },
    ProjectDef {
        slug: "gh/acme/auth",
        key: "auth",
        default_branch: "main",
        service: "auth",
        style: Style::Go,
        entities: ["Token", "Session", "Client", "SigningKey"],
        weight: 9.0,
        small_weight: 0.0,
        default_share: 0.45,
        workflows: &[(BuildTest, 0.6), (Deploy, 0.4)],
        nightly: false,
        speed: 0.6,
        helm: false,
    },
    ProjectDef {
        slug: "gh/acme/search",
        key: "search",
        default_branch: "main",
        service: "search",
        style: Style::Python,
        entities: ["Document", "Ranking", "Suggestion", "Filter"],
        weight: 8.0,
        small_weight: 0.0,
        default_share: 0.50,
        workflows: &[(BuildTest, 0.6), (Deploy, 0.3), (Release, 0.1)],
        nightly: true,
        speed: 1.1,
        helm: true,
    },
    ProjectDef {
        slug: "gl/acme/platform/payments",
        key: "payments",
        default_branch: "main",
        service: "payments",
        style: Style::Java("ServiceTest"),
        entities: ["Charge", "Refund", "Payout", "Webhook"],
        weight: 8.0,
        small_weight: 0.0,
        default_share: 0.40,
        workflows: &[(BuildTest, 0.55), (Deploy, 0.25), (Release, 0.2)],
        nightly: true,
        speed: 1.3,
        helm: false,
    },
    ProjectDef {
        slug: "gh/acme/notifications",
        key: "notifications",
        default_branch: "main",
        service: "notifications",
        style: Style::Go,
        entities: ["Email", "Sms", "Push", "Template"],
        weight: 7.0,
        small_weight: 0.0,
        default_share: 0.50,
        workflows: &[(BuildTest, 0.7), (Deploy, 0.3)],
        nightly: false,
        speed: 0.8,
        helm: false,
    },
    ProjectDef {
        slug: "gl/acme/platform/gateway",
        key: "gateway",
        default_branch: "main",
        service: "gateway",
        style: Style::Go,
        entities: ["Route", "RateLimit", "Upstream", "Proxy"],
        weight: 6.0,
        small_weight: 0.0,
        default_share: 0.45,
        workflows: &[(BuildTest, 0.65), (Deploy, 0.35)],
        nightly: false,
        speed: 0.7,
        helm: true,
    },
    ProjectDef {
        slug: "bb/acme/analytics",
        key: "analytics",
        default_branch: "main",
        service: "analytics",
        style: Style::Python,
        entities: ["Event", "Session", "Funnel", "Report"],
        weight: 5.0,
        small_weight: 0.0,
        default_share: 0.50,
        workflows: &[(BuildTest, 0.7), (Deploy, 0.3)],
        nightly: true,
        speed: 1.0,
        helm: false,
    },
];

const PEOPLE: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
const BOT: &str = "renovate[bot]";
const SCHEDULER: &str = "scheduler";
const BRANCH_PREFIXES: [&str; 6] = ["feature", "feature", "feature", "fix", "fix", "chore"];
const TOPICS: [&str; 40] = [
    "login",
    "cache",
    "signup",
    "checkout",
    "search",
    "pagination",
    "retry",
    "timeouts",
    "logging",
    "metrics",
    "rate-limit",
    "oauth",
    "sso",
    "dark-mode",
    "i18n",
    "csv-export",
    "webhooks",
    "invoices",
    "refunds",
    "emails",
    "profile",
    "settings",
    "onboarding",
    "audit-log",
    "uploads",
    "thumbnails",
    "sessions",
    "password-reset",
    "feature-flags",
    "health-check",
    "db-pool",
    "migrations",
    "graphql",
    "grpc",
    "docker",
    "ci",
    "flaky-tests",
    "deps",
    "readme",
    "typos",
];
const DEPENDENCIES: [&str; 8] = [
    "lodash",
    "jackson",
    "requests",
    "openssl",
    "protobuf",
    "grpc",
    "postgres-driver",
    "node-20",
];
const ASSERTIONS: [&str; 5] = [
    "expected: <200> but was: <500>",
    "AssertionError: assert 3 == 4",
    "expected true, got false",
    "NullPointerException: user was null",
    "expected 2 items, found 0",
];
const FLAKES: [&str; 4] = [
    "connection reset by peer",
    "timed out waiting for the database container",
    "address already in use",
    "read timeout after 5000 ms",
];

/// What a job of a run does; each workflow is a sequence of roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Build,
    Lint,
    Unit,
    Integration,
    Scan,
    Coverage,
    Staging,
    Smoke,
    Production,
    E2e,
    Report,
}

/// A set of tests a test job runs.
#[derive(Clone, Copy)]
enum Suite {
    Unit,
    Integration,
    Smoke,
    E2e,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Unit => "unit",
            Suite::Integration => "integration",
            Suite::Smoke => "smoke",
            Suite::E2e => "e2e",
        }
    }
}

/// The fixed traits of a role's job.
struct JobDef {
    name: &'static str,
    stage: &'static str,
    /// Jobs of the same order run in parallel; a higher order waits for the lower ones.
    order: u8,
    kind: Kind,
    median_s: f64,
    credits_per_min: f64,
    suite: Option<Suite>,
}

impl Role {
    fn def(self) -> JobDef {
        let (name, stage, order, kind, median_s, credits_per_min, suite) = match self {
            Role::Build => ("build", "build", 0, Kind::Build, 150.0, 20.0, None),
            Role::Lint => ("lint", "build", 0, Kind::Other, 60.0, 5.0, None),
            Role::Unit => (
                "unit-tests",
                "test",
                1,
                Kind::Test,
                180.0,
                10.0,
                Some(Suite::Unit),
            ),
            Role::Integration => (
                "integration-tests",
                "test",
                1,
                Kind::Test,
                300.0,
                10.0,
                Some(Suite::Integration),
            ),
            Role::Scan => ("security-scan", "test", 1, Kind::Other, 90.0, 5.0, None),
            Role::Coverage => ("coverage", "report", 2, Kind::Other, 40.0, 5.0, None),
            Role::Staging => ("deploy-staging", "deploy", 2, Kind::Deploy, 90.0, 5.0, None),
            Role::Smoke => (
                "smoke-tests",
                "verify",
                3,
                Kind::Test,
                60.0,
                5.0,
                Some(Suite::Smoke),
            ),
            Role::Production => (
                "deploy-production",
                "release",
                4,
                Kind::Deploy,
                120.0,
                5.0,
                None,
            ),
            Role::E2e => (
                "e2e-tests",
                "test",
                1,
                Kind::Test,
                600.0,
                20.0,
                Some(Suite::E2e),
            ),
            Role::Report => ("report", "report", 2, Kind::Other, 30.0, 5.0, None),
        };
        JobDef {
            name,
            stage,
            order,
            kind,
            median_s,
            credits_per_min,
            suite,
        }
    }
}

/// The most jobs a run has.
const MAX_JOBS: usize = 5;
/// The jobs of each kind of run. The last job of a main-branch build, a deploy and a release is
/// optional: it deploys, to staging or production, only on some runs.
const FEATURE_BUILD: [Role; MAX_JOBS] = [
    Role::Build,
    Role::Lint,
    Role::Unit,
    Role::Scan,
    Role::Coverage,
];
const MAIN_BUILD: [Role; MAX_JOBS] = [
    Role::Build,
    Role::Lint,
    Role::Unit,
    Role::Integration,
    Role::Staging,
];
const DEPLOY: [Role; MAX_JOBS] = [
    Role::Build,
    Role::Unit,
    Role::Staging,
    Role::Smoke,
    Role::Production,
];
const NIGHTLY: [Role; MAX_JOBS] = [
    Role::Build,
    Role::Unit,
    Role::Integration,
    Role::E2e,
    Role::Report,
];
const RELEASE: [Role; MAX_JOBS] = [
    Role::Build,
    Role::Unit,
    Role::Integration,
    Role::Staging,
    Role::Production,
];

/// One test of a project's suite.
struct TestDef {
    name: String,
    classname: String,
    file: Option<String>,
    /// Typical duration in seconds.
    seconds: f64,
    /// Whether it fails now and then whatever the code.
    flaky: bool,
    /// Whether it is disabled and always reported as skipped.
    disabled: bool,
}

/// A bug on a branch: which job it breaks and, for a test job, which of its tests.
#[derive(Clone, Copy)]
struct Breakage {
    role: Role,
    tests: u32,
}

/// A branch of a project and its current state.
struct Slot {
    branch: String,
    /// Index into `PEOPLE`, or `PEOPLE.len()` for the dependency bot.
    owner: usize,
    /// The head commit; empty until the branch's first run.
    commit: String,
    committed_at: i64,
    broken: Option<Breakage>,
    /// The workflow to re-run on the same commit, after a failure.
    rerun: Option<Workflow>,
    /// How often the branch is built, relative to the other feature branches.
    weight: f64,
    /// When the branch is merged or abandoned and its slot taken by a new branch.
    expires_at: i64,
}

/// A project with its test catalog, branches and build counters.
struct Project {
    def: &'static ProjectDef,
    slug: String,
    key: String,
    default_branch: String,
    service: String,
    /// Tests of each suite, indexed by `Suite as usize`.
    suites: [Vec<TestDef>; 4],
    /// The chance that a flaky test fails in a run.
    flake_rate: f64,
    /// Slot 0 is the default branch; the others are feature branches.
    slots: Vec<Slot>,
    /// Last build number per workflow.
    numbers: [i64; 4],
    tickets: u64,
}

impl Project {
    fn new(
        def: &'static ProjectDef,
        index: usize,
        rng: &mut Rng,
        start: i64,
        feature_per_day: f64,
    ) -> Project {
        let suites = [
            unit_tests(def, index),
            integration_tests(def, index),
            smoke_tests(),
            e2e_tests(index),
        ];
        let mut project = Project {
            def,
            slug: def.slug.to_owned(),
            key: def.key.to_owned(),
            default_branch: def.default_branch.to_owned(),
            service: def.service.to_owned(),
            suites,
            flake_rate: rng.range(0.08, 0.12),
            slots: Vec::new(),
            numbers: [0; 4],
            tickets: 100 + rng.below(400) as u64,
        };
        project.slots.push(Slot {
            branch: project.default_branch.clone(),
            owner: 0,
            commit: String::new(),
            committed_at: start,
            broken: None,
            rerun: None,
            weight: 1.0,
            expires_at: i64::MAX,
        });
        // About three builds a day per active feature branch.
        let active = (feature_per_day / 3.0).round().clamp(3.0, 40.0) as usize;
        for _ in 0..active {
            let slot = project.new_branch(rng, start - HOUR_MS);
            project.slots.push(slot);
        }
        project
    }

    /// A fresh feature branch, opened at `t`.
    fn new_branch(&mut self, rng: &mut Rng, t: i64) -> Slot {
        let (branch, owner) = if rng.chance(0.08) {
            (
                format!("renovate/{}", rng.pick(&DEPENDENCIES)),
                PEOPLE.len(),
            )
        } else {
            let prefix = rng.pick(&BRANCH_PREFIXES);
            let topic = rng.pick(&TOPICS);
            let branch = if rng.chance(0.4) {
                self.tickets += 1 + rng.below(3) as u64;
                format!(
                    "{prefix}/{}-{}-{topic}",
                    self.key.to_uppercase(),
                    self.tickets
                )
            } else {
                format!("{prefix}/{topic}")
            };
            (branch, rng.below(PEOPLE.len()))
        };
        let lifetime = (rng.exponential(2.5 * DAY_MS as f64) as i64).max(2 * HOUR_MS);
        Slot {
            branch,
            owner,
            commit: String::new(),
            committed_at: t,
            broken: None,
            rerun: None,
            weight: exp(0.8 * rng.normal()),
            expires_at: t + lifetime,
        }
    }

    /// A feature branch to build at `t`, replacing it first if its time is over.
    fn feature_slot(&mut self, rng: &mut Rng, t: i64) -> usize {
        let i = 1 + rng.weighted(self.slots[1..].iter().map(|s| s.weight));
        if t >= self.slots[i].expires_at {
            self.slots[i] = self.new_branch(rng, t);
        }
        i
    }

    /// Moves a branch to a new commit, which may break or fix it.
    fn commit(&mut self, rng: &mut Rng, slot: usize, t: i64) {
        let default = slot == 0;
        let unit_len = self.suites[Suite::Unit as usize].len();
        let integration_len = self.suites[Suite::Integration as usize].len();
        let s = &mut self.slots[slot];
        s.commit = sha(rng);
        s.committed_at = t - SECOND_MS * 20 - rng.exponential(4.0 * MINUTE_MS as f64) as i64;
        s.rerun = None;
        s.broken = match s.broken {
            // Most pushes onto a broken branch are the fix; some are not.
            Some(b) if !rng.chance(0.55) => Some(b),
            Some(_) => None,
            // The default branch only gets reviewed and tested changes, so it breaks less.
            None if rng.chance(if default { 0.02 } else { 0.025 }) => {
                let u = rng.unit();
                let (role, len) = if u < 0.2 {
                    (Role::Build, 0)
                } else if u < 0.35 {
                    (Role::Lint, 0)
                } else if u < 0.85 {
                    (Role::Unit, unit_len)
                } else {
                    (Role::Integration, integration_len)
                };
                let mut tests = 0;
                if len > 0 {
                    for _ in 0..1 + rng.below(3) {
                        tests |= 1 << rng.below(len);
                    }
                }
                Some(Breakage { role, tests })
            }
            None => None,
        };
    }
}

/// 40 lowercase hex digits.
fn sha(rng: &mut Rng) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(40);
    let mut bits = 0u64;
    for i in 0..40 {
        if i % 16 == 0 {
            bits = rng.next_u64();
        }
        s.push(char::from(HEX[(bits & 15) as usize]));
        bits >>= 4;
    }
    s
}

/// The unit tests of a project: four per entity, named in the project's style.
fn unit_tests(def: &ProjectDef, index: usize) -> Vec<TestDef> {
    let mut rng = Rng::new(index as u64, 5);
    let mut tests = Vec::new();
    for entity in def.entities {
        let snake = snake_case(entity);
        let (classname, file, names): (String, Option<String>, [String; 4]) = match def.style {
            Style::Java(suffix) => (
                format!("com.acme.{}.{entity}{suffix}", def.key),
                None,
                [
                    format!("creates{entity}"),
                    format!("rejectsInvalid{entity}"),
                    format!("updates{entity}"),
                    format!("deletes{entity}"),
                ],
            ),
            Style::Python => (
                format!("tests.test_{snake}s"),
                Some(format!("tests/test_{snake}s.py")),
                [
                    format!("test_create_{snake}"),
                    format!("test_reject_invalid_{snake}"),
                    format!("test_update_{snake}"),
                    format!("test_delete_{snake}"),
                ],
            ),
            Style::Js => (
                entity.to_owned(),
                Some(format!("src/components/{entity}.test.tsx")),
                [
                    "renders".to_owned(),
                    "handles user input".to_owned(),
                    "shows an error state".to_owned(),
                    "matches the snapshot".to_owned(),
                ],
            ),
            Style::Go => (
                format!("github.com/acme/{}/{}", def.key, snake.replace('_', "")),
                None,
                [
                    format!("Test{entity}Create"),
                    format!("Test{entity}RejectsInvalid"),
                    format!("Test{entity}Update"),
                    format!("Test{entity}Delete"),
                ],
            ),
        };
        for name in names {
            tests.push(TestDef {
                name,
                classname: classname.clone(),
                file: file.clone(),
                seconds: exp(rng.range(-3.5, 0.0)),
                flaky: false,
                disabled: false,
            });
        }
    }
    // One test per project has been disabled for a while.
    let disabled = (index * 5 + 3) % tests.len();
    tests[disabled].disabled = true;
    tests
}

/// Slower tests against real dependencies; two of them are flaky.
fn integration_tests(def: &ProjectDef, index: usize) -> Vec<TestDef> {
    let mut rng = Rng::new(index as u64, 6);
    let mut tests = Vec::new();
    for entity in &def.entities[..2] {
        let snake = snake_case(entity);
        let (classname, file, names): (String, Option<String>, [String; 3]) = match def.style {
            Style::Java(_) => (
                format!("com.acme.{}.it.{entity}ApiIT", def.key),
                None,
                [
                    format!("get{entity}ReturnsOk"),
                    format!("post{entity}Persists"),
                    format!("list{entity}sPaginates"),
                ],
            ),
            Style::Python => (
                format!("tests.integration.test_{snake}s_api"),
                Some(format!("tests/integration/test_{snake}s_api.py")),
                [
                    format!("test_get_{snake}"),
                    format!("test_post_{snake}"),
                    format!("test_list_{snake}s"),
                ],
            ),
            Style::Js => (
                format!("{entity} integration"),
                Some(format!("tests/integration/{entity}.test.ts")),
                [
                    "loads data from the API".to_owned(),
                    "submits to the API".to_owned(),
                    "recovers after a network error".to_owned(),
                ],
            ),
            Style::Go => (
                format!("github.com/acme/{}/integration", def.key),
                None,
                [
                    format!("Test{entity}APIGet"),
                    format!("Test{entity}APIPost"),
                    format!("Test{entity}APIList"),
                ],
            ),
        };
        for name in names {
            tests.push(TestDef {
                name,
                classname: classname.clone(),
                file: file.clone(),
                seconds: rng.range(0.5, 8.0),
                flaky: false,
                disabled: false,
            });
        }
    }
    let len = tests.len();
    tests[index % len].flaky = true;
    tests[(index + 3) % len].flaky = true;
    tests
}

/// Checks against a freshly deployed environment.
fn smoke_tests() -> Vec<TestDef> {
    [
        "health endpoint returns 200",
        "login succeeds",
        "version matches the deployed image",
    ]
    .iter()
    .map(|name| TestDef {
        name: (*name).to_owned(),
        classname: "smoke".to_owned(),
        file: None,
        seconds: 0.8,
        flaky: false,
        disabled: false,
    })
    .collect()
}

/// Whole user journeys through a browser; one of them is flaky.
fn e2e_tests(index: usize) -> Vec<TestDef> {
    let names = [
        "user signs up",
        "user logs in",
        "user resets the password",
        "user completes checkout",
        "user searches the catalog",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| TestDef {
            name: (*name).to_owned(),
            classname: "e2e.journeys".to_owned(),
            file: Some(format!("e2e/journey_{i}.spec.ts")),
            seconds: 20.0 + 5.0 * i as f64,
            flaky: i == index % names.len(),
            disabled: false,
        })
        .collect()
}

/// "RateLimit" → "rate_limit".
fn snake_case(pascal: &str) -> String {
    let mut s = String::with_capacity(pascal.len() + 4);
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// Appends the decimal digits of `n`.
fn push_number(s: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
    }
}

/// How a job is meant to end, decided before its times are.
#[derive(Clone, Copy)]
struct Intent {
    status: Status,
    /// Tests of the job's suite that fail because of the code.
    broken: u32,
    /// Flaky tests of the job's suite that fail this time.
    flaky: u32,
}

/// The state of the generation: the projects with their branches, and the random stream.
struct Generator {
    rng: Rng,
    now: i64,
    projects: Vec<Project>,
    /// Weights for picking a project for any run, and for a scheduled one.
    weights: Vec<f64>,
    nightly_weights: Vec<f64>,
}

impl Generator {
    fn new(seed: u64, start: i64, now: i64, total: u64, defs: &[&'static ProjectDef]) -> Generator {
        let mut rng = Rng::new(seed, 1);
        let small = defs.len() < PROJECTS.len();
        let weights: Vec<f64> = defs
            .iter()
            .map(|d| if small { d.small_weight } else { d.weight })
            .collect();
        let sum: f64 = weights.iter().sum();
        let days = (now - start) as f64 / DAY_MS as f64;
        let projects = defs
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (def, w))| {
                let feature_per_day = total as f64 * w / sum * (1.0 - def.default_share) / days;
                Project::new(def, i, &mut rng, start, feature_per_day)
            })
            .collect();
        let nightly_weights = defs
            .iter()
            .zip(&weights)
            .map(|(d, w)| if d.nightly { *w } else { 0.0 })
            .collect();
        Generator {
            rng,
            now,
            projects,
            weights,
            nightly_weights,
        }
    }

    /// One run created at `t`; `scheduled` makes it a nightly run started by the scheduler.
    fn run(&mut self, t: i64, scheduled: bool) -> Run {
        let rng = &mut self.rng;
        let p = if scheduled {
            rng.weighted(self.nightly_weights.iter().copied())
        } else {
            rng.weighted(self.weights.iter().copied())
        };
        let project = &mut self.projects[p];

        // Which branch and workflow, and whether this re-runs a failure on the same commit.
        let (slot, workflow) = if scheduled {
            (0, Nightly)
        } else if rng.chance(project.def.default_share) {
            let workflows = project.def.workflows;
            (0, workflows[rng.weighted(workflows.iter().map(|w| w.1))].0)
        } else {
            (project.feature_slot(rng, t), BuildTest)
        };
        let pending = if scheduled {
            None
        } else {
            project.slots[slot].rerun.take()
        };
        let workflow = pending.unwrap_or(workflow);
        let rerun = pending.is_some();
        // Builds usually follow a push; deploys and schedules take the head as it is.
        let push_chance = if workflow == BuildTest { 0.8 } else { 0.15 };
        if project.slots[slot].commit.is_empty() || (!rerun && rng.chance(push_chance)) {
            project.commit(rng, slot, t);
        }
        let default = slot == 0;
        let (trigger, actor) = match (workflow, default) {
            _ if scheduled => ("schedule", SCHEDULER),
            (BuildTest, false) => {
                let owner = project.slots[slot].owner;
                let actor = if owner < PEOPLE.len() {
                    PEOPLE[owner]
                } else {
                    BOT
                };
                if rerun {
                    ("manual", actor)
                } else if rng.chance(0.75) {
                    ("pull_request", actor)
                } else {
                    ("push", actor)
                }
            }
            _ if rerun => ("manual", rng.pick(&PEOPLE)),
            (Deploy, _) if rng.chance(0.3) => ("manual", rng.pick(&PEOPLE)),
            (Release, _) => ("manual", rng.pick(&PEOPLE)),
            _ => ("push", rng.pick(&PEOPLE)),
        };

        // The jobs the run will have.
        let (plan, production) = match (workflow, default) {
            (BuildTest, false) => (&FEATURE_BUILD[..], false),
            (BuildTest, true) if rng.chance(0.9) => (&MAIN_BUILD[..], false),
            (BuildTest, true) => (&MAIN_BUILD[..4], false),
            (Deploy, _) if rng.chance(0.35) => (&DEPLOY[..], true),
            (Deploy, _) => (&DEPLOY[..4], false),
            (Nightly, _) => (&NIGHTLY[..], false),
            (Release, _) if rng.chance(0.85) => (&RELEASE[..], true),
            (Release, _) => (&RELEASE[..4], false),
        };

        let number = {
            let n = &mut project.numbers[workflow.index()];
            *n += 1;
            *n
        };
        let intents = intents(rng, project, slot, plan);
        let mut id = String::with_capacity(24);
        id.push_str(workflow.name());
        id.push('-');
        push_number(&mut id, number as u64);
        let parameters = match workflow {
            Deploy if production => {
                Some(r#"[{"name":"DEPLOY_ENV","value":"production"}]"#.to_owned())
            }
            Deploy => Some(r#"[{"name":"DEPLOY_ENV","value":"staging"}]"#.to_owned()),
            Release => Some(format!(r#"[{{"name":"VERSION","value":"1.{number}.0"}}]"#)),
            Nightly => Some(r#"[{"name":"SUITE","value":"full"}]"#.to_owned()),
            BuildTest if trigger == "manual" && rng.chance(0.1) => {
                Some(r#"[{"name":"DEBUG","value":"true"}]"#.to_owned())
            }
            BuildTest => None,
        };
        let mut detail_url = String::with_capacity(40 + project.slug.len() + id.len());
        detail_url.push_str("https://ci.example.com/");
        detail_url.push_str(&project.slug);
        detail_url.push('/');
        detail_url.push_str(&id);

        let s = &project.slots[slot];
        let mut run = Run {
            id,
            project: project.slug.clone(),
            project_key: Some(project.key.clone()),
            default_branch: Some(project.default_branch.clone()),
            workflow: workflow.name().to_owned(),
            pipeline_id: None,
            number: Some(number),
            branch: Some(s.branch.clone()),
            commit: Some(s.commit.clone()),
            actor: Some(actor.to_owned()),
            trigger: Some(trigger.to_owned()),
            committed_at: Some(s.committed_at),
            status: Status::Success,
            created_at: t,
            started_at: None,
            stopped_at: None,
            credits_used: 0,
            detail_url: Some(detail_url),
            parameters,
            jobs: Vec::with_capacity(plan.len()),
        };
        execute(rng, project, plan, &intents[..plan.len()], &mut run);
        if run.stopped_at.is_some_and(|stop| stop >= self.now) {
            in_progress(&mut run, self.now);
        }
        // People re-run what looks like bad luck (a flaky test, a lost runner) more readily than
        // a failure their change caused.
        let caused = project.slots[slot]
            .broken
            .is_some_and(|b| plan.contains(&b.role));
        let rerun_chance = match run.status {
            Status::Failed if caused => 0.3,
            Status::Failed | Status::Error | Status::Timeout => 0.7,
            _ => 0.0,
        };
        if rng.chance(rerun_chance) {
            project.slots[slot].rerun = Some(workflow);
        }
        run
    }
}

/// Decides how each job of a run ends: broken code, flaky tests, failed deploys, lost runners,
/// timeouts and cancellations.
fn intents(rng: &mut Rng, project: &Project, slot: usize, plan: &[Role]) -> [Intent; MAX_JOBS] {
    let broken = project.slots[slot].broken;
    let mut intents = [Intent {
        status: Status::Success,
        broken: 0,
        flaky: 0,
    }; MAX_JOBS];
    for (intent, &role) in intents.iter_mut().zip(plan) {
        if let Some(b) = broken.filter(|b| b.role == role) {
            intent.status = Status::Failed;
            intent.broken = b.tests;
        }
        if let Some(suite) = role.def().suite {
            for (i, test) in project.suites[suite as usize].iter().enumerate() {
                if test.flaky && rng.chance(project.flake_rate) {
                    intent.flaky |= 1 << i;
                    intent.status = Status::Failed;
                }
            }
        }
        let failure_rate = match role {
            Role::Staging | Role::Production => 0.02,
            Role::Smoke => 0.01,
            _ => 0.0,
        };
        if rng.chance(failure_rate) {
            intent.status = Status::Failed;
        }
    }
    let u = rng.unit();
    if u < 0.012 {
        // A runner died under one of the jobs.
        intents[rng.below(plan.len())].status = Status::Error;
    } else if u < 0.02 {
        // A test job, or the build, hung until its timeout.
        let hangs = |role: &&Role| matches!(role.def().kind, Kind::Test | Kind::Build);
        let nth = rng.below(plan.iter().filter(hangs).count());
        let role = plan.iter().filter(hangs).nth(nth);
        if let Some(i) = plan.iter().position(|r| Some(r) == role) {
            intents[i].status = Status::Timeout;
        }
    } else if u < if slot == 0 { 0.03 } else { 0.05 } {
        // Someone canceled the run, or a newer push superseded it: every job of one stage stops.
        let order = plan[rng.below(plan.len())].def().order;
        for (intent, role) in intents.iter_mut().zip(plan) {
            if role.def().order == order {
                intent.status = Status::Canceled;
            }
        }
    }
    intents
}

/// Lays the jobs out in time, stage after stage, and sets the run's times, status and credits.
fn execute(rng: &mut Rng, project: &Project, plan: &[Role], intents: &[Intent], run: &mut Run) {
    let queue = if rng.chance(0.03) {
        rng.ms(MINUTE_MS, 10 * MINUTE_MS)
    } else {
        2 * SECOND_MS + rng.exponential(10.0 * SECOND_MS as f64) as i64
    };
    let started = run.created_at + queue;
    // A cold cache or a slow runner slows every job of the run.
    let mut pace = rng.lognormal(project.def.speed, 0.2);
    if rng.chance(0.03) {
        pace *= rng.range(2.0, 4.0);
    }
    let short_sha = &run.commit.as_deref().unwrap_or_default()[..7];
    let mut image = String::with_capacity(48);
    image.push_str("registry.example.com/acme/");
    image.push_str(&project.service);
    image.push(':');
    image.push_str(short_sha);

    let mut ready = started;
    let mut halted_at = None;
    let mut first_bad = None;
    let mut i = 0;
    while i < plan.len() {
        let order = plan[i].def().order;
        let end_of_stage = i + plan[i..]
            .iter()
            .take_while(|r| r.def().order == order)
            .count();
        let mut stage_end = ready;
        for k in i..end_of_stage {
            let def = plan[k].def();
            let mut job = job_shell(run, k, &def, plan[k], project, &image);
            if let Some(halt) = halted_at {
                // An earlier stage failed: this job never starts.
                job.status = Status::Skipped;
                job.stopped_at = Some(halt);
                run.jobs.push(job);
                continue;
            }
            let intent = intents[k];
            let job_start = ready + rng.ms(SECOND_MS, 6 * SECOND_MS);
            let mut seconds = rng.lognormal(def.median_s * pace, 0.25);
            match intent.status {
                Status::Timeout => seconds = 1800.0 + rng.range(0.0, 5.0),
                Status::Error | Status::Canceled => seconds *= rng.range(0.05, 0.9),
                Status::Failed if def.suite.is_none() => seconds *= rng.range(0.3, 1.0),
                _ => {}
            }
            let job_stop = job_start + (seconds * 1000.0) as i64;
            stage_end = stage_end.max(job_stop);
            job.status = intent.status;
            job.created_at = ready;
            job.started_at = Some(job_start);
            job.stopped_at = Some(job_stop);
            job.credits_used = (seconds * def.credits_per_min / 60.0).ceil() as i64;
            run.credits_used += job.credits_used;
            if intent.status != Status::Success && first_bad.is_none() {
                first_bad = Some(intent.status);
            }
            describe(rng, &mut job, plan[k], intent, project);
            if plan[k] == Role::Build && intent.status == Status::Success {
                job.artifacts = Some(vec![image.clone()]);
            }
            run.jobs.push(job);
        }
        if first_bad.is_some() && halted_at.is_none() {
            halted_at = Some(stage_end);
        }
        ready = stage_end + rng.ms(SECOND_MS, 4 * SECOND_MS);
        i = end_of_stage;
    }
    run.status = first_bad.unwrap_or(Status::Success);
    run.started_at = Some(started);
    run.stopped_at = Some(halted_at.unwrap_or(ready));
}

/// A job with its identity and deploy target filled in, not yet run.
fn job_shell(
    run: &Run,
    position: usize,
    def: &JobDef,
    role: Role,
    project: &Project,
    image: &str,
) -> Job {
    let mut id = String::with_capacity(run.id.len() + 3);
    id.push_str(&run.id);
    id.push('/');
    push_number(&mut id, position as u64);
    let run_url = run.detail_url.as_deref().unwrap_or_default();
    let mut detail_url = String::with_capacity(run_url.len() + 8);
    detail_url.push_str(run_url);
    detail_url.push_str("/jobs/");
    push_number(&mut detail_url, position as u64);
    let mut job = Job {
        id,
        name: def.name.to_owned(),
        stage: Some(def.stage.to_owned()),
        kind: def.kind,
        status: Status::Queued,
        created_at: run.created_at,
        started_at: None,
        stopped_at: None,
        credits_used: 0,
        detail_url: Some(detail_url),
        error_code: None,
        error_msg: None,
        env: None,
        cluster: None,
        service: None,
        service_type: None,
        production: false,
        artifacts: None,
        tests: def.suite.map(|_| Vec::new()),
    };
    let target = match role {
        Role::Staging => Some(("staging", "staging-cluster", false)),
        Role::Production => Some(("production", "prod-cluster", true)),
        _ => None,
    };
    if let Some((env, cluster, production)) = target {
        job.env = Some(env.to_owned());
        job.cluster = Some(cluster.to_owned());
        job.service = Some(project.service.clone());
        job.service_type = Some("k8s".to_owned());
        job.production = production;
        job.artifacts = Some(vec![image.to_owned()]);
    }
    job
}

/// Fills in a finished job's test results and error details.
fn describe(rng: &mut Rng, job: &mut Job, role: Role, intent: Intent, project: &Project) {
    let suite = role.def().suite;
    let completed = matches!(intent.status, Status::Success | Status::Failed);
    if let (Some(suite), true) = (suite, completed) {
        let catalog = &project.suites[suite as usize];
        let mut tests = Vec::with_capacity(catalog.len());
        let mut failures = 0;
        for (i, def) in catalog.iter().enumerate() {
            let bit = 1 << i;
            let (result, message) = if def.disabled {
                (TestOutcome::Skipped, None)
            } else if intent.broken & bit != 0 {
                (TestOutcome::Failure, Some(rng.pick(&ASSERTIONS)))
            } else if intent.flaky & bit != 0 {
                (TestOutcome::Failure, Some(rng.pick(&FLAKES)))
            } else {
                (TestOutcome::Success, None)
            };
            if result == TestOutcome::Failure {
                failures += 1;
            }
            let seconds = def.seconds * rng.range(0.8, 1.4);
            tests.push(TestCase {
                name: def.name.clone(),
                classname: Some(def.classname.clone()),
                file: def.file.clone(),
                suite: Some(suite.name().to_owned()),
                result,
                duration: Some((seconds * 1000.0) as i64 as f64 / 1000.0),
                message: message.map(str::to_owned),
            });
        }
        if intent.status == Status::Failed && failures == 0 {
            // A check failed without a broken test of its own (a bad smoke check, or a bug that
            // hit a disabled test): the first passing test takes the blame.
            if let Some(first) = tests.iter_mut().find(|t| t.result == TestOutcome::Success) {
                first.result = TestOutcome::Failure;
                first.message = Some(rng.pick(&ASSERTIONS).to_owned());
                failures = 1;
            }
        }
        job.tests = Some(tests);
        if intent.status == Status::Failed {
            job.error_code = Some("tests_failed".to_owned());
            job.error_msg = Some(format!("{failures} of {} tests failed", catalog.len()));
        }
        return;
    }
    let (code, msg) = match (intent.status, role) {
        (Status::Failed, Role::Build) => ("compile_error", "compilation failed with 3 errors"),
        (Status::Failed, Role::Lint) => ("lint_failed", "the linter reported 4 problems"),
        (Status::Failed, Role::Staging | Role::Production) => (
            "deploy_failed",
            "rollout did not complete: progress deadline exceeded",
        ),
        (Status::Failed, _) => ("step_failed", "a step exited with status 1"),
        (Status::Error, _) => (
            "runner_system_failure",
            "the runner lost its connection to the job",
        ),
        (Status::Timeout, _) => ("job_timeout", "the job exceeded its 30 minute timeout"),
        _ => return,
    };
    job.error_code = Some(code.to_owned());
    job.error_msg = Some(msg.to_owned());
}

/// Rewrites a run that has not finished by `now`: finished jobs stay, the rest run or wait.
fn in_progress(run: &mut Run, now: i64) {
    let started = run.started_at.filter(|&s| s < now);
    run.status = if started.is_some() {
        Status::Running
    } else {
        Status::Queued
    };
    run.started_at = started;
    run.stopped_at = None;
    run.credits_used = 0;
    for job in &mut run.jobs {
        if job.stopped_at.is_some_and(|stop| stop < now) {
            run.credits_used += job.credits_used;
            continue;
        }
        if job.started_at.is_some_and(|s| s < now) {
            job.status = Status::Running;
        } else {
            job.status = Status::Queued;
            job.started_at = None;
            job.created_at = run.created_at;
        }
        job.stopped_at = None;
        job.credits_used = 0;
        job.error_code = None;
        job.error_msg = None;
        if job.kind == Kind::Build {
            job.artifacts = None;
        }
        // Results arrive when a test job finishes; until then there are none to replace.
        job.tests = None;
    }
}

/// A few rollbacks a week per project, in staging or production, oldest first.
fn rollbacks(seed: u64, days: u32, defs: &[&'static ProjectDef], clock: &Clock) -> Vec<Rollback> {
    let mut rng = Rng::new(seed, 2);
    let heaviest = defs.iter().map(|d| d.weight).fold(0.0, f64::max);
    let mut all = Vec::new();
    for def in defs {
        let per_week = 2.0 + 2.0 * def.weight / heaviest;
        let count = (per_week * f64::from(days) / 7.0 * rng.range(0.8, 1.2)).round() as usize;
        // People roll back during their working hours, never in the nightly schedule's burst.
        let mut times: Vec<i64> = (0..count)
            .map(|_| loop {
                let (t, scheduled) = clock.at(rng.unit());
                if scheduled <= 0.0 {
                    break t;
                }
            })
            .collect();
        times.sort_unstable();
        let mut revision = 10 + rng.below(30);
        for created_at in times {
            revision += 1 + rng.below(6);
            let production = rng.chance(0.4);
            let back = 1 + usize::from(rng.chance(0.2));
            let person = rng.pick(&PEOPLE);
            let service_json = |revision: usize, rng: &mut Rng| {
                let image = &sha(rng)[..7];
                format!(
                    r#"{{"service_name":"{s}","revision":{revision},"containers":[{{"name":"{s}","image":"registry.example.com/acme/{s}:{image}"}}]}}"#,
                    s = def.service
                )
            };
            all.push(Rollback {
                id: None,
                project: def.key.to_owned(),
                env: Some(if production { "production" } else { "staging" }.to_owned()),
                env_type: Some(if production { "production" } else { "testing" }.to_owned()),
                production,
                operation_type: Some(
                    if rng.chance(0.7) {
                        "service"
                    } else {
                        "workload"
                    }
                    .to_owned(),
                ),
                service: Some(def.service.to_owned()),
                service_type: Some(if def.helm { "helm" } else { "k8s" }.to_owned()),
                origin_service: Some(service_json(revision, &mut rng)),
                update_service: Some(service_json(revision - back, &mut rng)),
                create_by: Some(format!(r#"{{"name":"{person}","account":"{person}"}}"#)),
                created_at,
            });
        }
    }
    all.sort_by_key(|r| r.created_at);
    for (i, r) in all.iter_mut().enumerate() {
        r.id = Some(format!("rb-{}", i + 1));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::convert::Infallible;
    use std::time::Instant;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600_000;

    fn spec(runs: Option<u64>, days: u32, seed: u64) -> Spec {
        Spec {
            runs,
            days,
            seed,
            now_ms: NOW,
        }
    }

    /// Every run and the rollbacks, with the sizes of the batches the sink saw.
    fn collect(spec: &Spec, batch: usize) -> (Vec<Run>, Vec<Rollback>, Vec<usize>) {
        let mut runs = Vec::new();
        let mut sizes = Vec::new();
        let rollbacks = generate(spec, batch, |b: Vec<Run>| {
            sizes.push(b.len());
            runs.extend(b);
            Ok::<(), Infallible>(())
        })
        .unwrap();
        (runs, rollbacks, sizes)
    }

    #[test]
    fn portable_exp_and_ln_match_the_platform() {
        let mut rng = Rng::new(0, 0);
        for _ in 0..100_000 {
            let x = rng.range(-40.0, 40.0);
            assert!((exp(x) / x.exp() - 1.0).abs() < 1e-14, "exp({x})");
            let y = 1.0 - rng.unit();
            assert!(
                (ln(y) - y.ln()).abs() <= 1e-15 * y.ln().abs().max(1.0),
                "ln({y})"
            );
            let z = rng.range(1.0, 1e12);
            assert!((ln(z) / z.ln() - 1.0).abs() < 1e-14, "ln({z})");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(-800.0), 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_data_whatever_the_batch() {
        let (a, ra, _) = collect(&spec(Some(3_000), 30, 7), 500);
        let (b, rb, _) = collect(&spec(Some(3_000), 30, 7), 1);
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        let (c, rc, _) = collect(&spec(Some(3_000), 30, 8), 500);
        assert_ne!(a, c);
        assert_ne!(ra, rc);
    }

    #[test]
    fn the_requested_count_comes_in_batches() {
        for (runs, batch) in [
            (0, 10),
            (1, 10),
            (10, 3),
            (1_234, 100),
            (1_000, 1_000),
            (5, 0),
        ] {
            let (all, _, sizes) = collect(&spec(Some(runs), 90, 1), batch);
            assert_eq!(all.len() as u64, runs);
            assert_eq!(sizes.iter().sum::<usize>() as u64, runs);
            if let Some((last, full)) = sizes.split_last() {
                assert!(full.iter().all(|&n| n == batch.max(1)), "{sizes:?}");
                assert!((1..=batch.max(1)).contains(last));
            }
        }
        for seed in 0..20 {
            let (all, _, _) = collect(&spec(None, 90, seed), 1_000);
            assert!((4_000..=6_000).contains(&all.len()), "{}", all.len());
        }
    }

    #[test]
    fn a_sink_error_stops_the_generation() {
        let mut calls = 0;
        let result = generate(&spec(Some(1_000), 90, 1), 100, |_| {
            calls += 1;
            if calls == 3 {
                Err("disk full")
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("disk full"));
        assert_eq!(calls, 3);
    }

    #[test]
    fn runs_are_in_order_inside_the_window() {
        for (runs, days) in [(None, 90), (Some(50_000), 7), (Some(3), 1), (Some(500), 0)] {
            let (all, rollbacks, _) = collect(&spec(runs, days, 3), 997);
            let start = NOW - i64::from(days.max(1)) * DAY_MS;
            assert!(all.windows(2).all(|w| w[0].created_at <= w[1].created_at));
            assert!(all.iter().all(|r| (start..NOW).contains(&r.created_at)));
            assert!(rollbacks
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at));
            assert!(rollbacks
                .iter()
                .all(|r| (start..NOW).contains(&r.created_at)));
        }
    }

    #[test]
    fn every_value_keeps_the_model_invariants() {
        for (runs, days) in [(None, 90), (Some(30_000), 7), (Some(2), 90)] {
            let (all, rollbacks, _) = collect(&spec(runs, days, 11), 1_000);
            let mut ids = HashSet::new();
            for run in &all {
                assert!(
                    ids.insert((run.project.clone(), run.id.clone())),
                    "duplicate {}",
                    run.id
                );
                check_run(run);
            }
            let keys: HashSet<&str> = all
                .iter()
                .filter_map(|r| r.project_key.as_deref())
                .collect();
            let mut rollback_ids = HashSet::new();
            for r in &rollbacks {
                assert!(rollback_ids.insert(r.id.clone().unwrap()));
                assert!(keys.contains(r.project.as_str()));
                assert_eq!(r.production, r.env.as_deref() == Some("production"));
                for json in [&r.origin_service, &r.update_service, &r.create_by] {
                    let json = json.as_deref().unwrap();
                    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
                }
            }
        }
    }

    fn check_run(run: &Run) {
        let ok = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        assert!(!run.id.is_empty() && run.id.len() <= 256);
        assert!(!run.project.is_empty() && !run.workflow.is_empty());
        assert!(ok(&run.project_key) && ok(&run.default_branch));
        assert!(ok(&run.branch) && ok(&run.actor) && ok(&run.trigger));
        assert!(run.pipeline_id.is_none());
        assert!(run.number.is_some_and(|n| n >= 1));
        let commit = run.commit.as_deref().unwrap();
        assert!(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(run.committed_at.unwrap() <= run.created_at);
        let url = format!("https://ci.example.com/{}/{}", run.project, run.id);
        assert_eq!(run.detail_url.as_deref(), Some(url.as_str()));
        if let Some(p) = &run.parameters {
            assert!(p.starts_with("[{\"name\":") && p.ends_with("}]"), "{p}");
        }
        match run.status {
            Status::Queued => assert!(run.started_at.is_none()),
            Status::Running => assert!(run.started_at.is_some()),
            _ => assert!(run.status.is_terminal() && run.started_at.is_some()),
        }
        assert_eq!(run.status.is_terminal(), run.stopped_at.is_some());
        assert!(run.started_at.map_or(true, |s| s >= run.created_at));
        assert!(run
            .stopped_at
            .map_or(true, |s| s >= run.started_at.unwrap() && s < NOW));
        assert!(run.credits_used >= 0);
        assert_eq!(
            run.credits_used,
            run.jobs.iter().map(|j| j.credits_used).sum::<i64>()
        );
        assert!(!run.jobs.is_empty());
        for (i, job) in run.jobs.iter().enumerate() {
            assert_eq!(job.id, format!("{}/{i}", run.id));
            assert!(job.id.len() <= 256 && !job.name.is_empty() && ok(&job.stage));
            assert_eq!(job.status.is_terminal(), job.stopped_at.is_some());
            assert!(job.created_at >= run.created_at && job.credits_used >= 0);
            assert!(job.started_at.map_or(true, |s| s >= job.created_at));
            assert!(job
                .started_at
                .map_or(true, |s| run.started_at.is_some_and(|r| s >= r)));
            let floor = job.started_at.unwrap_or(job.created_at);
            assert!(job.stopped_at.map_or(true, |s| s >= floor));
            if run.status.is_terminal() {
                assert!(job.status.is_terminal());
                assert!(job.stopped_at.unwrap() <= run.stopped_at.unwrap());
            }
            let bad = matches!(job.status, Status::Failed | Status::Error | Status::Timeout);
            assert_eq!(bad, job.error_code.is_some());
            assert_eq!(bad, job.error_msg.is_some());
            if job.kind == Kind::Deploy {
                assert!(ok(&job.env) && ok(&job.cluster) && ok(&job.service));
                assert_eq!(job.service_type.as_deref(), Some("k8s"));
                assert_eq!(job.production, job.env.as_deref() == Some("production"));
            } else {
                assert!(!job.production && job.env.is_none());
            }
            match (job.kind, job.status.is_terminal()) {
                (Kind::Test, true) => {
                    let tests = job.tests.as_ref().unwrap();
                    let failures = tests.iter().filter(|t| t.result == TestOutcome::Failure);
                    match job.status {
                        Status::Success => assert_eq!(failures.count(), 0),
                        Status::Failed => assert!(failures.count() > 0),
                        _ => assert!(tests.is_empty()),
                    }
                    for t in tests {
                        assert!(!t.name.is_empty() && ok(&t.classname) && ok(&t.suite));
                        assert!(t.duration.is_some_and(|d| d >= 0.0));
                        assert_eq!(t.result == TestOutcome::Failure, t.message.is_some());
                    }
                }
                (Kind::Test, false) => assert!(job.tests.is_none()),
                _ => assert!(job.tests.is_none()),
            }
        }
        if run.status.is_terminal() && run.status != Status::Success {
            // The job that decided the status has it, and nothing after its stage ran.
            let first = run
                .jobs
                .iter()
                .position(|j| j.status == run.status)
                .unwrap();
            let stage = &run.jobs[first].stage;
            for job in &run.jobs[first..] {
                if &job.stage != stage {
                    assert!(
                        matches!(job.status, Status::Skipped | Status::Canceled),
                        "{run:#?}"
                    );
                }
            }
            if run.status == Status::Success {
                assert!(run.jobs.iter().all(|j| j.status == Status::Success));
            }
        }
    }

    #[test]
    fn the_heaviest_project_has_the_intended_default_branch_share() {
        let (all, _, _) = collect(&spec(Some(100_000), 90, 5), 10_000);
        let mut per_project: HashMap<&str, (usize, usize)> = HashMap::new();
        for run in &all {
            let entry = per_project.entry(run.project.as_str()).or_default();
            entry.0 += 1;
            if run.branch == run.default_branch {
                entry.1 += 1;
            }
        }
        assert_eq!(per_project.len(), 10);
        let (slug, &(runs, default)) = per_project.iter().max_by_key(|(_, v)| v.0).unwrap();
        assert_eq!(*slug, "gh/acme/api");
        let share = runs as f64 / all.len() as f64;
        assert!((0.18..0.23).contains(&share), "{share}");
        let default_share = default as f64 / runs as f64;
        assert!((0.27..0.34).contains(&default_share), "{default_share}");
    }

    #[test]
    fn default_data_has_flaky_tests_and_realistic_outcomes() {
        let (all, _, _) = collect(&spec(None, 90, 42), 1_000);
        let projects: HashSet<&str> = all.iter().map(|r| r.project.as_str()).collect();
        assert_eq!(projects.len(), 4);
        // A flaky test both passed and failed on one commit.
        let mut outcomes: HashMap<(&str, &str, &str, &str), (bool, bool)> = HashMap::new();
        for run in &all {
            for t in run.jobs.iter().filter_map(|j| j.tests.as_ref()).flatten() {
                let key = (
                    run.project.as_str(),
                    run.commit.as_deref().unwrap(),
                    t.classname.as_deref().unwrap(),
                    t.name.as_str(),
                );
                let entry = outcomes.entry(key).or_default();
                entry.0 |= t.result == TestOutcome::Success;
                entry.1 |= t.result == TestOutcome::Failure;
            }
        }
        assert!(outcomes.values().any(|&(passed, failed)| passed && failed));
        // The status mix of a healthy team.
        let share =
            |status| all.iter().filter(|r| r.status == status).count() as f64 / all.len() as f64;
        assert!(
            (0.80..0.90).contains(&share(Status::Success)),
            "{}",
            share(Status::Success)
        );
        assert!(
            (0.06..0.12).contains(&share(Status::Failed)),
            "{}",
            share(Status::Failed)
        );
        for status in [Status::Error, Status::Timeout, Status::Canceled] {
            assert!(
                (0.001..0.04).contains(&share(status)),
                "{status:?} {}",
                share(status)
            );
        }
        // Failures come in streaks: some failed run on a branch is followed by another one.
        let mut last: HashMap<(&str, &str, &str), Status> = HashMap::new();
        let mut repeated = 0;
        for run in &all {
            let key = (
                run.project.as_str(),
                run.workflow.as_str(),
                run.branch.as_deref().unwrap(),
            );
            if let Some(previous) = last.insert(key, run.status) {
                if previous == Status::Failed && run.status == Status::Failed {
                    repeated += 1;
                }
            }
        }
        assert!(repeated > 20, "{repeated}");
    }

    #[test]
    fn activity_follows_the_working_week() {
        let (all, _, _) = collect(&spec(None, 90, 9), 1_000);
        let mut office = 0;
        let mut night = 0;
        let mut weekday = 0;
        let mut weekend = 0;
        for run in &all {
            let hour = run.created_at.rem_euclid(DAY_MS) / HOUR_MS;
            let day = (run.created_at.div_euclid(DAY_MS) + 3).rem_euclid(7);
            if day >= 5 {
                weekend += 1;
            } else {
                weekday += 1;
                match hour {
                    10..=15 => office += 1,
                    3..=5 => night += 1,
                    _ => {}
                }
            }
        }
        // Per hour, nights are far quieter than office hours; per day, so are weekends.
        assert!(night * 2 * 10 < office, "{night} {office}");
        assert!(weekend * 5 * 3 < weekday * 2, "{weekend} {weekday}");
    }

    #[test]
    fn the_newest_runs_may_still_be_in_progress() {
        // A Thursday at 14:00 UTC, when the team is busy.
        let now = NOW + 14 * HOUR_MS;
        let (all, _, _) = collect(
            &Spec {
                runs: Some(50_000),
                days: 7,
                seed: 2,
                now_ms: now,
            },
            1_000,
        );
        let open: Vec<&Run> = all.iter().filter(|r| !r.status.is_terminal()).collect();
        assert!(open.iter().any(|r| r.status == Status::Running));
        assert!(open.iter().all(|r| r.created_at > now - HOUR_MS));
        assert!(open.len() < 200, "{}", open.len());
        for run in open {
            assert!(run.stopped_at.is_none());
            for job in &run.jobs {
                assert_eq!(job.status.is_terminal(), job.stopped_at.is_some());
                assert!(job.stopped_at.map_or(true, |s| s < now));
                assert!(job.started_at.map_or(true, |s| s < now));
            }
        }
    }

    #[test]
    fn there_are_production_deploys_and_rollbacks() {
        let (all, rollbacks, _) = collect(&spec(None, 90, 42), 1_000);
        let production = all
            .iter()
            .flat_map(|r| &r.jobs)
            .filter(|j| j.production && j.status == Status::Success)
            .count();
        assert!(production > 90, "{production}");
        assert!(rollbacks.len() > 4 * 20, "{}", rollbacks.len());
        assert!(rollbacks.iter().any(|r| r.production));
        assert!(rollbacks.iter().any(|r| !r.production));
    }

    /// Run with `cargo test --release -- --ignored --nocapture` for the figure.
    #[test]
    #[ignore = "a benchmark: a million runs"]
    fn a_million_runs_in_a_few_seconds() {
        let began = Instant::now();
        let (mut runs, mut jobs, mut tests) = (0usize, 0usize, 0usize);
        generate(&spec(Some(1_000_000), 90, 7), 1_000, |batch: Vec<Run>| {
            runs += batch.len();
            for run in &batch {
                jobs += run.jobs.len();
                tests += run
                    .jobs
                    .iter()
                    .filter_map(|j| j.tests.as_ref())
                    .map(Vec::len)
                    .sum::<usize>();
            }
            Ok::<(), Infallible>(())
        })
        .unwrap();
        let seconds = began.elapsed().as_secs_f64();
        println!(
            "{runs} runs, {jobs} jobs, {tests} tests in {seconds:.2} s: {:.0} runs/s",
            runs as f64 / seconds
        );
        assert_eq!(runs, 1_000_000);
    }
}
