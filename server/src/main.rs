use clap::Parser;
use server::{shutdown_signal, Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(server::log_filter(&config.log)?)
        .init();

    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    // Tests and scripts read the bound address from this line (port 0 picks a free port).
    println!("listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "tether started");
    server.run(shutdown_signal()).await?;
    tracing::info!("tether stopped");
    Ok(())
}
