use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;
use tern::cli::{Cli, Command, ServeArgs};
use tern::commands::Outcome;
use tern::server::{self, ServerSettings, StoreSettings};
use tern::serving::Limits;

/// How long blocking work still running at exit (a hung registry read) may hold it.
const EXIT_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = match tern::telemetry::init_logging(cli.log_format, &cli.log_level) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A panic is a bug: report it in the log format the operator reads, once.
    std::panic::set_hook(Box::new(
        |info| tracing::error!(panic = %info, "panic (a bug in Tern)"),
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    let result = runtime.block_on(run(cli.command));
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Refused) => ExitCode::FAILURE,
        // The daemon reports through its log (text or JSON); `get` prints for a person.
        Err(e) if serving => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<Outcome> {
    if let Some(result) = tern::commands::run(&command, &mut std::io::stdout()).await {
        return Ok(result?);
    }
    match command {
        Command::Serve(args) => serve(args).await.map(|()| Outcome::Done),
        Command::Get(args) => {
            print!("{}", tern::client::get(&args).await?);
            Ok(Outcome::Done)
        }
        Command::Health(args) => {
            println!("{}", tern::client::health(&args).await?);
            Ok(Outcome::Done)
        }
        _ => Ok(Outcome::Done),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(addr) = args.metrics_addr {
        tern::telemetry::install_metrics(addr)
            .await
            .context("cannot start the metrics endpoint")?;
    }
    let config = tern::config::load(&args.config, |k| std::env::var(k).ok())?;
    // A bad `auth` section stops start-up before anything is loaded.
    let auth = tern::auth::Authenticator::from_config(&config.auth)?;
    let store = StoreSettings {
        sqlite_readers: args
            .sqlite_readers
            .unwrap_or(StoreSettings::default().sqlite_readers),
        sqlite_inline_keys: args.sqlite_inline_keys,
        sqlite_mmap_size: args.sqlite_mmap_size,
        timeout: Duration::from_millis(args.store_timeout_ms),
        registry_timeout: Duration::from_millis(args.registry_timeout_ms),
        registry_poll: args.registry_poll_ms.map(Duration::from_millis),
        redis_connections: args.redis_connections,
        wait_for_registry: args.wait_for_registry,
    };
    let limits = Limits {
        max_concurrent_requests: usize::try_from(args.max_concurrent_requests)
            .unwrap_or(usize::MAX),
        max_entity_rows: usize::try_from(args.max_entity_rows).unwrap_or(usize::MAX),
    };
    let (serving, reloader) = server::open_serving(&config, &store, Default::default()).await?;
    if auth.enabled() && serving.registry().snapshot().permissions().is_empty() {
        tracing::warn!(
            project = %config.project,
            "authentication is on but the registry holds no permission for the project: every authenticated caller may read and write (as Feast does)"
        );
    }
    tokio::spawn(server::reload_on_sighup(reloader.handle()));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = tern::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            };
            Some(Arc::new(tern::tls::ServerTls::load(files)?))
        }
        _ => None,
    };
    if auth.enabled() && tls.is_none() && !args.grpc_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %args.grpc_addr,
            "authentication is on but TLS is off: bearer tokens cross the network in clear text (use --tls-cert and --tls-key)"
        );
    }
    let settings = ServerSettings {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        max_request_bytes: args.max_request_bytes,
        config_path: Some(args.config.clone()),
        tls,
        auth,
        ..ServerSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_addr))?;
    let http = match args.http_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--http-addr)"))?,
        ),
        None => None,
    };
    let health = match args.health_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--health-addr)"))?,
        ),
        None => None,
    };
    server::run(
        server::Listeners {
            main: listener,
            http,
            health,
        },
        Arc::new(serving.with_limits(limits)),
        Some(reloader),
        &settings,
        server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
