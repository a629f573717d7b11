use std::process::ExitCode;

use clap::Parser;
use server::config::Command;
use server::{backup, shutdown_signal, telemetry, Config, Server};

fn main() -> anyhow::Result<ExitCode> {
    let mut config = Config::parse();
    match config.command.take() {
        None => serve(config).map(|()| ExitCode::SUCCESS),
        Some(Command::Backup(args)) => {
            match backup::run(&config.data_dir, config.redis_url.as_deref(), &args) {
                Ok(report) => {
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("tether backup: {:#}", anyhow::Error::from(e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(&config.log, config.log_format)?;

    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    // Tests and scripts read the bound address from this line (port 0 picks a free port); it
    // is the one place an address is printed: log lines carry none (see `telemetry`).
    println!("listening on http://{addr}");
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics on http://{metrics}");
    }
    tracing::info!(port = addr.port(), data_dir = %config.data_dir.display(), "tether started");
    server.run(shutdown_signal()).await?;
    tracing::info!("tether stopped");
    Ok(())
}
