//! `kprf --config=PATH`: the HTTP producer proxy. See the README.

use std::{path::PathBuf, process::ExitCode, sync::Mutex};

use kprf::{kafka, Config, NullBackend, Shutdown};

const USAGE: &str = "usage: kprf [--config=PATH]\n\
    Settings come from the YAML file and KPRF_* variables (KPRF_KAFKA__BROKERS=a:9092,...);\n\
    see apps/kprf/README.md.";

fn main() -> ExitCode {
    let mut config = None;
    // Hidden: answer /push without producing (the benchmark's HTTP ceiling).
    let mut null_backend = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(p) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(p));
        } else if a == "--config" {
            match args.next() {
                Some(p) => config = Some(PathBuf::from(p)),
                None => return usage_error("--config needs a path"),
            }
        } else if a == "--null-backend" {
            null_backend = true;
        } else if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        } else {
            return usage_error(&format!("unknown argument {a:?}"));
        }
    }
    let cfg = match Config::load(config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kprf: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cfg.output_file) {
        eprintln!("kprf: output_file {}: {e}", cfg.output_file);
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kprf: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = Shutdown::on_signals();
        if null_backend {
            kprf::run(cfg, || async { Ok(NullBackend) }, shutdown).await
        } else {
            let c = cfg.clone();
            kprf::run(
                cfg,
                move || {
                    let c = c.clone();
                    async move {
                        let client = kafka::connect(&c).await?;
                        kafka::KafkaBackend::new(client, &c)
                    }
                },
                shutdown,
            )
            .await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kprf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("kprf: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn init_logging(path: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .init();
    Ok(())
}
