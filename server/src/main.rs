use clap::Parser;
use server::{shutdown_signal, telemetry, Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
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
