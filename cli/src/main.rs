//! `rskafka`: a kcat-like command-line client built on the rskafka library.
//!
//! Every failure ends in a one-line `error: ...` on stderr and a non-zero
//! exit status (1 for runtime errors, 2 for usage errors); a panic hook keeps
//! even a bug from printing a backtrace.

mod admin;
mod consume;
mod format;
mod group;
mod produce;
mod security;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rskafka::client::{Client, ClientBuilder};

/// Exit status for runtime failures (broker errors, timeouts, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit status for invalid command lines, as clap uses.
const EXIT_USAGE: u8 = 2;

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
    /// Comma-separated bootstrap brokers (host:port); defaults to
    /// $KAFKA_BROKERS, then localhost:9092.
    #[arg(
        long,
        global = true,
        env = "KAFKA_BROKERS",
        default_value = "localhost:9092"
    )]
    brokers: String,
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
    /// Authenticate with SASL.
    #[arg(long, global = true, ignore_case = true, value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])]
    sasl_mechanism: Option<String>,
    /// SASL username.
    #[arg(long, global = true)]
    sasl_username: Option<String>,
    /// SASL password; prefer $RSKAFKA_SASL_PASSWORD, as command lines are
    /// visible to other users of the machine.
    #[arg(
        long,
        global = true,
        env = "RSKAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    sasl_password: Option<String>,
    /// Reach the brokers (bootstrap and discovered) through this SOCKS5
    /// proxy; broker names are resolved by the proxy.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    socks5: Option<String>,
}

impl GlobalArgs {
    /// The bound on connecting and on each request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the APIs the broker supports and the version this client uses.
    ApiVersions,
    /// Show brokers, the controller, topics, partitions, leaders and replicas.
    Metadata,
    /// List, create or delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of stdin (or --file).
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Print the earliest and latest offset of every partition of a topic.
    Offsets {
        /// The topic.
        topic: String,
    },
    /// Consumer groups: list, describe, lag, seek, delete.
    #[command(subcommand)]
    Group(group::GroupCommand),
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

/// An error to report on one line before exiting.
#[derive(Debug)]
pub struct CliError(String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rskafka::error::Error> for CliError {
    fn from(e: rskafka::error::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self(format!("I/O error: {e}"))
    }
}

impl CliError {
    /// An error with a message of our own.
    pub fn msg(m: impl Into<String>) -> Self {
        Self(m.into())
    }
}

/// The CLI's result type.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Connects to the cluster, bounded by `--timeout-ms`.
pub async fn connect(global: &GlobalArgs) -> CliResult<Client> {
    let brokers: Vec<String> = global
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    if brokers.is_empty() {
        return Err(CliError::msg("--brokers is empty"));
    }
    let timeout = global.timeout();
    let builder = ClientBuilder::new(brokers)
        .client_id(global.client_id.clone())
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .operation_timeout(timeout);
    let build = security::apply(global, builder)?.build();
    // The library bounds connecting by the same deadline; this outer bound
    // only guards the promise "exits within about --timeout-ms".
    match tokio::time::timeout(timeout + Duration::from_millis(500), build).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CliError::msg(format!(
            "no broker of {} answered within {} ms",
            global.brokers, global.timeout_ms
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

fn install_panic_hook() {
    // A bug must still end in one line on stderr, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let msg = msg.replace('\n', " ");
        match info.location() {
            Some(l) => eprintln!(
                "error: internal error: {msg} (at {}:{})",
                l.file(),
                l.line()
            ),
            None => eprintln!("error: internal error: {msg}"),
        }
    }));
}

fn parse_args() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
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
                    let rendered = e.render().to_string();
                    let first = rendered
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("error: invalid arguments");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    eprintln!("error: {first} (see --help)");
                    Err(ExitCode::from(EXIT_USAGE))
                }
            }
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    match cli.command {
        Command::ApiVersions => admin::api_versions(g).await,
        Command::Metadata => admin::metadata(g).await,
        Command::Topic(TopicCommand::List) => admin::topic_list(g).await,
        Command::Topic(TopicCommand::Create(args)) => admin::topic_create(g, args).await,
        Command::Topic(TopicCommand::Delete { name }) => admin::topic_delete(g, &name).await,
        Command::Offsets { topic } => admin::offsets(g, &topic).await,
        Command::Produce(args) => produce::run(g, args).await,
        Command::Consume(args) => consume::run(g, args).await,
        Command::Group(cmd) => group::run(g, cmd).await,
    }
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match parse_args() {
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
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // Don't wait for connection tasks to wind down: the work is done.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.0.replace('\n', " "));
            ExitCode::from(EXIT_FAILURE)
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
