//! `rskafka`: a kcat-like command-line client built on the rskafka library.
//!
//! Every failure ends in a one-line `error: ...` on stderr and a non-zero
//! exit status: 1 for runtime errors (broker, network, I/O), 2 for usage
//! errors (a command line that cannot work, whether clap or a later check
//! finds it), 130 or 143 for a `produce` that SIGINT or SIGTERM stopped
//! before its input ended. A panic hook keeps even a bug from printing a
//! backtrace. Error lines are redacted of the SASL password, whatever it
//! looks like and wherever it came from.

mod admin;
mod cluster;
mod consume;
mod fake_cluster;
mod format;
mod group;
mod meter;
mod output;
mod produce;
mod security;
mod signals;
mod transactions;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rskafka::client::{properties::Properties, Client, ClientBuilder};

/// Exit status for runtime failures (broker errors, timeouts, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit status for invalid command lines, as clap uses.
const EXIT_USAGE: u8 = 2;
/// The environment variable the SASL password may come from.
const PASSWORD_ENV: &str = "RSKAFKA_SASL_PASSWORD";
/// The option the SASL password may come from.
const PASSWORD_FLAG: &str = "--sasl-password";
/// Flags whose values are secrets, kept out of every error line
/// (`user-scram upsert --password` besides the SASL password).
const SECRET_FLAGS: [&str; 2] = [PASSWORD_FLAG, "--password"];
/// Environment variables holding secrets, likewise.
const SECRET_ENVS: [&str; 2] = [PASSWORD_ENV, "RSKAFKA_SCRAM_PASSWORD"];

#[derive(Parser, Debug)]
#[command(name = "rskafka", version, about = "A kcat-like Apache Kafka client")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Comma-separated bootstrap brokers (host:port; port 9092 if none is
    /// given); defaults to $KAFKA_BOOTSTRAP (or its alias $KAFKA_BROKERS),
    /// then localhost:9092.
    #[arg(long, global = true, env = BOOTSTRAP_VAR)]
    brokers: Option<String>,
    /// Whether --brokers came from the command line rather than the
    /// environment (`fake-cluster` reads it as a broker count).
    #[arg(skip)]
    brokers_on_command_line: bool,
    /// Client id sent to the brokers.
    #[arg(long, global = true, default_value = "rskafka-cli")]
    client_id: String,
    /// Bound, in milliseconds, on connecting and on each request.
    #[arg(long, global = true, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
    /// Connect with TLS, verifying brokers against the system's CAs (or
    /// --ca-file) and their host names.
    #[arg(long, global = true)]
    tls: bool,
    /// PEM file of the CA certificates to trust instead of the system's
    /// (implies --tls).
    #[arg(long, global = true, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (implies --tls; with --key-file).
    #[arg(long, global = true, value_name = "PATH", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, global = true, value_name = "PATH", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Authenticate with SASL (OAUTHBEARER takes
    /// --sasl-oauthbearer-token-file, or librdkafka's unsecured tokens with
    /// -X sasl.oauthbearer.config=principal=NAME -X
    /// enable.sasl.oauthbearer.unsecure.jwt=true).
    #[arg(long, global = true, ignore_case = true, value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])]
    sasl_mechanism: Option<String>,
    /// OAUTHBEARER: a file holding the bearer token (such as a JWT), read
    /// again at every (re-)authentication, so an agent may rotate it.
    #[arg(long, global = true, value_name = "PATH")]
    sasl_oauthbearer_token_file: Option<PathBuf>,
    /// SASL username.
    #[arg(long, global = true)]
    sasl_username: Option<String>,
    /// SASL password; prefer $RSKAFKA_SASL_PASSWORD, as command lines are
    /// visible to other users of the machine.
    // Hyphen values: a password such as `--x` or `-abc` is the value, not
    // an unknown option clap would quote back in its error.
    #[arg(
        long,
        global = true,
        env = PASSWORD_ENV,
        hide_env_values = true,
        allow_hyphen_values = true,
        value_parser = parse_secret
    )]
    sasl_password: Option<Secret>,
    /// Reach the brokers (bootstrap and discovered) through this SOCKS5
    /// proxy; broker names are resolved by the proxy.
    #[arg(long, global = true, value_name = "HOST:PORT", value_parser = parse_host_port)]
    socks5: Option<String>,
    /// A Java client / librdkafka property `NAME=VALUE` (repeatable; e.g.
    /// `-X linger.ms=20 -X isolation.level=read_committed`); it overrides the
    /// flag for the same setting. Unknown names and bad values are usage
    /// errors.
    #[arg(short = 'X', global = true, value_name = "NAME=VALUE", value_parser = parse_property)]
    pub property: Vec<Property>,
    /// A `.properties` file of such properties (`name=value` lines, `#`
    /// comments); `-X` overrides it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
}

/// A `-X NAME=VALUE`; `Debug` hides the value of a password or JAAS
/// property.
#[derive(Clone)]
pub struct Property(String);

impl std::fmt::Debug for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once('=') {
            Some((name, _)) if name.contains("password") || name.contains("jaas") => {
                write!(f, "{name}=<hidden>")
            }
            _ => write!(f, "{:?}", self.0),
        }
    }
}

fn parse_property(s: &str) -> Result<Property, String> {
    Ok(Property(s.to_owned()))
}

/// A secret; `Debug` does not show it, so printing the parsed arguments
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(s.to_owned()))
}

/// Checks a `HOST:PORT` value (an IPv6 host in brackets).
fn parse_host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err("expected HOST:PORT".to_owned()),
    }
}

impl GlobalArgs {
    /// The bound on connecting and on each request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `--config-file`, then each `-X`.
    pub fn properties(&self) -> CliResult<Properties> {
        let mut props = match &self.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::usage(format!("--config-file {}: {e}", path.display()))
                })?;
                Properties::parse(&text).map_err(|e| {
                    CliError::usage(format!("--config-file {}: {e}", path.display()))
                })?
            }
            None => Properties::new(),
        };
        for Property(p) in &self.property {
            props
                .set_assignment(p)
                .map_err(|e| CliError::usage(format!("-X: {e}")))?;
        }
        Ok(props)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the APIs the broker supports and the version this client uses.
    ApiVersions,
    /// Show brokers, the controller, topics, partitions, leaders and replicas.
    Metadata(admin::MetadataArgs),
    /// List, create or delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of stdin (or --file).
    ///
    /// A run that fails or gets SIGINT/SIGTERM (exit 130/143) stops
    /// reading, waits for what it sent, and says which lines were
    /// acknowledged; with --transactional-id, it aborts the open
    /// transaction and says which lines were committed.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Print the earliest and latest offset of every partition of a topic,
    /// or with --at the first offset at or after a time (kcat's -Q).
    Offsets {
        /// The topic.
        topic: String,
        /// Print `PARTITION<TAB>OFFSET`: each partition's first offset whose
        /// record timestamp is at or after this time (milliseconds since the
        /// epoch), -1 if it has none.
        #[arg(long, value_name = "TIMESTAMP_MS", allow_hyphen_values = true)]
        at: Option<i64>,
    },
    /// Consumer groups: list, describe, lag, seek, delete.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Describe the cluster: id, controller, brokers.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Describe or change broker and topic configs.
    #[command(subcommand)]
    Config(cluster::ConfigCommand),
    /// Create, list or delete ACLs.
    #[command(subcommand)]
    Acl(cluster::AclCommand),
    /// Move partitions to other replicas, or list the moves in progress.
    #[command(subcommand)]
    Reassign(cluster::ReassignCommand),
    /// Elect partition leaders: the preferred replica, or any (unclean).
    ElectLeaders(cluster::ElectArgs),
    /// Describe or change client quotas of users and client ids.
    #[command(subcommand)]
    Quota(cluster::QuotaCommand),
    /// Describe, create or delete users' SCRAM credentials.
    #[command(subcommand)]
    UserScram(cluster::ScramCommand),
    /// Print each broker's log directories and the replicas in them.
    LogDirs(cluster::LogDirsArgs),
    /// Print the producers with state on a topic's partitions.
    Producers(cluster::ProducersArgs),
    /// List transactions, or describe one.
    #[command(subcommand)]
    Txn(cluster::TxnCommand),
    /// Serve an in-process fake Kafka cluster (for tests) on 127.0.0.1
    /// until SIGINT or SIGTERM; prints its bootstrap line first.
    FakeCluster(fake_cluster::FakeClusterArgs),
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Print every topic name, one a line.
    List,
    /// Create a topic.
    Create(admin::CreateArgs),
    /// Delete a topic.
    Delete {
        /// The topic.
        name: String,
    },
}

/// Compression codecs selectable on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// An error to report on one line before exiting; the variant picks the
/// exit status.
#[derive(Debug)]
pub enum CliError {
    /// A runtime failure (broker, network, I/O): exit 1.
    Failure(String),
    /// A command line that cannot work, found after clap accepted it (a
    /// malformed value, flags that contradict each other): exit 2, as for
    /// clap's own usage errors.
    Usage(String),
    /// Stopped by a signal before the work was done: exit 128 plus the
    /// signal number, as a shell reports a process the signal killed.
    Interrupted(signals::Signal, String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failure(m) | Self::Interrupted(_, m) => f.write_str(m),
            Self::Usage(m) => write!(f, "{m} (see --help)"),
        }
    }
}

impl From<rskafka::error::Error> for CliError {
    fn from(e: rskafka::error::Error) -> Self {
        Self::Failure(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::Failure(format!("I/O error: {e}"))
    }
}

impl CliError {
    /// A runtime error with a message of our own.
    pub fn msg(m: impl Into<String>) -> Self {
        Self::Failure(m.into())
    }

    /// A usage error: the command line cannot work as given.
    pub fn usage(m: impl Into<String>) -> Self {
        Self::Usage(m.into())
    }

    /// The exit status this error ends the process with.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Failure(_) => EXIT_FAILURE,
            Self::Usage(_) => EXIT_USAGE,
            Self::Interrupted(s, _) => s.exit_code(),
        }
    }
}

/// Removes the SASL password from text the CLI prints, wherever the
/// password came from and whatever it looks like: a message may quote an
/// argument (clap's errors) or a value the library was given.
#[derive(Debug, Default, Clone)]
struct Redactor {
    /// Longest first, so that a secret containing another goes whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// The passwords in `args` (`--sasl-password X`, `--password=X`, ...)
    /// and `env_passwords`, found without clap: its errors need redacting
    /// too.
    fn new(
        args: &[std::ffi::OsString],
        env_passwords: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Self {
        let mut secrets: Vec<String> = env_passwords
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mut args = args.iter().map(|a| a.to_string_lossy());
        while let Some(a) = args.next() {
            if SECRET_FLAGS.contains(&a.as_ref()) {
                secrets.extend(args.next().map(std::borrow::Cow::into_owned));
            } else if let Some(v) = SECRET_FLAGS
                .iter()
                .find_map(|flag| a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
            {
                secrets.push(v.to_owned());
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every occurrence of a secret replaced.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "<redacted>");
        }
        text
    }

    /// Prints `message` as the one `error: ...` line.
    fn print_error(&self, message: &str) {
        // Redacted before joining lines: a secret may span them.
        eprintln!("error: {}", self.redact(message).replace('\n', " "));
    }
}

/// The broker address variable of the scripts, the tests and the CLI.
const BOOTSTRAP_VAR: &str = "KAFKA_BOOTSTRAP";
/// Its alias, the CLI's name before.
const BOOTSTRAP_ALIAS_VAR: &str = "KAFKA_BROKERS";

impl GlobalArgs {
    /// `--brokers`, else the alias variable, else a local broker.
    fn brokers(&self) -> String {
        let set = |v: &Option<String>| v.as_ref().filter(|v| !v.trim().is_empty()).cloned();
        set(&self.brokers)
            .or_else(|| set(&std::env::var(BOOTSTRAP_ALIAS_VAR).ok()))
            .unwrap_or_else(|| "localhost:9092".to_owned())
    }
}

/// The CLI's result type.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Connects to the cluster, bounded by `--timeout-ms`.
pub async fn connect(global: &GlobalArgs) -> CliResult<Client> {
    let props = global.properties()?;
    let default_brokers = global.brokers();
    let brokers: Vec<String> = props
        .get("bootstrap.servers")
        .unwrap_or(&default_brokers)
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    if brokers.is_empty() {
        return Err(CliError::usage("--brokers is empty"));
    }
    // A malformed address is a usage error, told before connecting.
    for b in &brokers {
        rskafka::client::normalize_broker_address(b)
            .map_err(|e| CliError::usage(format!("--brokers: {e}")))?;
    }
    let timeout = global.timeout();
    let shown = brokers.join(",");
    let builder = ClientBuilder::new(brokers)
        .client_id(global.client_id.clone())
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .operation_timeout(timeout);
    let builder = props
        .apply_to_client(security::apply(global, builder)?)
        .map_err(|e| CliError::usage(format!("-X: {e}")))?;
    let build = builder.build();
    // The library bounds connecting by the same deadline; this outer bound
    // only guards the promise "exits within about --timeout-ms".
    match tokio::time::timeout(timeout + Duration::from_millis(500), build).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CliError::msg(format!(
            "no broker of {} answered within {} ms",
            shown, global.timeout_ms
        ))),
    }
}

/// Runs `fut`, failing if it takes longer than `timeout`.
pub async fn bounded<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = CliResult<T>>,
) -> CliResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(CliError::msg(format!(
            "{what} timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

fn install_panic_hook(redactor: Redactor) {
    // A bug must still end in one line on stderr, never a backtrace.
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        match info.location() {
            Some(l) => redactor.print_error(&format!(
                "internal error: {msg} (at {}:{})",
                l.file(),
                l.line()
            )),
            None => redactor.print_error(&format!("internal error: {msg}")),
        }
    }));
}

fn parse_args(args: Vec<std::ffi::OsString>, redactor: &Redactor) -> Result<Cli, ExitCode> {
    use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
    let parsed = Cli::command().try_get_matches_from(args).and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        let given =
            |m: &clap::ArgMatches| m.value_source("brokers") == Some(ValueSource::CommandLine);
        cli.global.brokers_on_command_line =
            given(&m) || m.subcommand().is_some_and(|(_, sub)| given(sub));
        Ok(cli)
    });
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    Err(if e.use_stderr() {
                        ExitCode::from(EXIT_USAGE)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                _ => {
                    // clap's own rendering spans several lines (tip, usage);
                    // the contract is one line, so keep its first line.
                    // Redacted first: a secret may span lines.
                    let rendered = redactor.redact(&e.render().to_string());
                    let first = rendered
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("error: invalid arguments");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    redactor.print_error(&format!("{first} (see --help)"));
                    Err(ExitCode::from(EXIT_USAGE))
                }
            }
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    // Bad properties are usage errors, told before anything connects.
    g.properties()?
        .check()
        .map_err(|e| CliError::usage(format!("-X: {e}")))?;
    match cli.command {
        Command::ApiVersions => admin::api_versions(g).await,
        Command::Metadata(args) => admin::metadata(g, args).await,
        Command::Topic(TopicCommand::List) => admin::topic_list(g).await,
        Command::Topic(TopicCommand::Create(args)) => admin::topic_create(g, args).await,
        Command::Topic(TopicCommand::Delete { name }) => admin::topic_delete(g, &name).await,
        Command::Offsets { topic, at } => admin::offsets(g, &topic, at).await,
        Command::Produce(args) => produce::run(g, args).await,
        Command::Consume(args) => consume::run(g, args).await,
        Command::Group(cmd) => group::run(g, cmd).await,
        Command::Cluster(cmd) => cluster::cluster(g, cmd).await,
        Command::Config(cmd) => cluster::config(g, cmd).await,
        Command::Acl(cmd) => cluster::acl(g, cmd).await,
        Command::Reassign(cmd) => cluster::reassign(g, cmd).await,
        Command::ElectLeaders(args) => cluster::elect_leaders(g, args).await,
        Command::Quota(cmd) => cluster::quota(g, cmd).await,
        Command::UserScram(cmd) => cluster::user_scram(g, cmd).await,
        Command::LogDirs(args) => cluster::log_dirs(g, args).await,
        Command::Producers(args) => cluster::producers(g, args).await,
        Command::Txn(cmd) => cluster::txn(g, cmd).await,
        Command::FakeCluster(args) => fake_cluster::run(g, args).await,
    }
}

/// Fixes glibc's mmap threshold, unless `MALLOC_MMAP_THRESHOLD_` sets it.
///
/// glibc raises the threshold to the size of each large block freed (up to
/// 32 MiB), after which fetch responses and decompressed batches of a few
/// MiB come from its heaps, which keep freed space: consuming 1 GiB peaked
/// at 80-130 MiB of RSS with a 64 MiB prefetch budget. With the threshold
/// fixed, large buffers go back to the system when freed (21-40 MiB), for
/// about 0.3 s more system time per GiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_out_of_the_heap() {
    const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
    extern "C" {
        fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before
        // any other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_out_of_the_heap() {}

fn main() -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let redactor = Redactor::new(&args, SECRET_ENVS.iter().filter_map(std::env::var_os));
    install_panic_hook(redactor.clone());
    let cli = match parse_args(args, &redactor) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            redactor.print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // Don't wait for connection tasks to wind down: the work is done.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            redactor.print_error(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// The partitions of `topic`, sorted; an unknown topic is an error.
pub async fn topic_partitions(client: &Client, g: &GlobalArgs, topic: &str) -> CliResult<Vec<i32>> {
    let topics = bounded(g.timeout(), "metadata", async {
        Ok(client.list_topics().await?)
    })
    .await?;
    let t = topics
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| {
            CliError::msg(format!(
                "unknown topic {topic:?} (UNKNOWN_TOPIC_OR_PARTITION)"
            ))
        })?;
    if t.partitions.is_empty() {
        return Err(CliError::msg(format!("topic {topic:?} has no partitions")));
    }
    Ok(t.partitions.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_passwords_are_redacted_too() {
        let args: Vec<std::ffi::OsString> = [
            "rskafka",
            "user-scram",
            "upsert",
            "u",
            "--password",
            "hunter2",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let r = Redactor::new(&args, [std::ffi::OsString::from("from-env")]);
        assert_eq!(
            r.redact("a hunter2 b from-env c"),
            "a <redacted> b <redacted> c"
        );
        let args: Vec<std::ffi::OsString> = ["rskafka", "--password=s3cret"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(Redactor::new(&args, None).redact("s3cret"), "<redacted>");
    }

    fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn debug_of_the_arguments_hides_the_password() {
        let cli = Cli::try_parse_from(os(&["rskafka", "--sasl-password", "--hunter2", "metadata"]))
            .expect("parses");
        assert_eq!(
            cli.global.sasl_password.as_ref().map(Secret::expose),
            Some("--hunter2")
        );
        let debug = format!("{cli:?} {:?}", cli.global);
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn redactor_finds_passwords_in_every_form() {
        let r = Redactor::new(
            &os(&[
                "rskafka",
                "--sasl-password",
                "--sasl-password=inner",
                "--sasl-password=-x",
                "--sasl-password",
            ]),
            Some("env-pw".into()),
        );
        assert_eq!(
            r.redact("a --sasl-password=inner b -x c env-pw d"),
            "a <redacted> b <redacted> c <redacted> d"
        );
        // Nothing to redact: text stays as it is.
        let none = Redactor::new(&os(&["rskafka", "--sasl-password="]), Some("".into()));
        assert_eq!(none.redact("error: x"), "error: x");
    }

    #[test]
    fn host_port_values() {
        assert!(parse_host_port("proxy:1080").is_ok());
        assert!(parse_host_port("[::1]:1080").is_ok());
        for bad in ["proxy", ":1080", "proxy:", "proxy:http", "proxy:70000"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }
}
