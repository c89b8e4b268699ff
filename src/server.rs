//! Assembles and runs the Pingora server from a validated [`Config`]: the proxy service on every
//! listener, the upstream health checks, the JWKS refresher and the admin listener.
//!
//! It must never start a proxy that could forward without authentication: the key store starts
//! empty and every protected request is refused (503) until a key set loads.

use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, LoadBalancer};
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{background_service, Opt};
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, Server};
use tokio::sync::broadcast::error::RecvError;

use crate::admin::AdminService;
use crate::config::Config;
use crate::jwks::{Authenticator, JwksRefresher};
use crate::metrics::Metrics;
use crate::proxy::edge::{EdgeApp, EdgeLimits};
use crate::proxy::{Gateway, InFlightCounter, UploadApi};
use pingora::services::ServiceWithDependents;

/// Failure to assemble the server (before it serves anything).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Pingora refused part of the set-up.
    #[error("cannot start: {0}")]
    Pingora(String),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Pingora's own command-line switches, passed through.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listeners of a running instance (zero-downtime upgrade).
    pub upgrade: bool,
    /// Run in the background.
    pub daemon: bool,
    /// Upgrade socket path (Pingora's default when `None`).
    pub upgrade_sock: Option<String>,
    /// PID file path (Pingora's default when `None`).
    pub pid_file: Option<String>,
}

/// Pingora sleeps through the whole grace period after SIGTERM even when nothing is in flight.
/// Watch the shutdown instead: once the grace period starts and no request is in flight, exit.
fn exit_when_drained(server: &Server, in_flight: InFlightCounter) {
    let mut phases = server.watch_execution_phase();
    let watcher = move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
        // Several idle observations in a row, so a request caught between accept and its
        // context being created is not cut off.
        let mut idle_polls = 0;
        loop {
            if in_flight.get() == 0 {
                idle_polls += 1;
                if idle_polls >= 3 {
                    tracing::info!("all in-flight requests finished; exiting");
                    std::process::exit(0);
                }
            } else {
                idle_polls = 0;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Without the watcher the gateway still exits, only at the end of the grace period.
    let _ = std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(watcher);
}

/// One attempt to load the key set before the listeners open, so a freshly started (or
/// upgraded) instance does not answer its first requests with 503. An IdP outage only delays
/// the start by [`INITIAL_LOAD_TIMEOUT`]: the background refresher keeps trying.
fn load_keys_before_serving(auth: &Authenticator) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The timer must be created inside the runtime.
    let _ = runtime
        .block_on(async { tokio::time::timeout(INITIAL_LOAD_TIMEOUT, auth.refresh()).await });
}

/// How long start-up waits for the first key set.
const INITIAL_LOAD_TIMEOUT: Duration = Duration::from_secs(3);

/// Builds the whole server; call [`Server::run_forever`] on the result.
pub fn build(config: Config, options: &RunOptions) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.shutdown_grace.as_secs()),
        // Runtimes get one more second after the grace period to wind down.
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.upstream.keepalive_pool_size,
        // Pingora's upstream TLS connector trusts this bundle instead of the system's.
        ca_file: config
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    if let Some(sock) = &options.upgrade_sock {
        conf.upgrade_sock = sock.clone();
    }
    if let Some(pid) = &options.pid_file {
        conf.pid_file = pid.clone();
    }
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let parts = parts(config.clone(), &server)?;
    if let Some(admin_addr) = config.observability.admin_listen {
        let (metrics, auth, upstreams) = parts.api.admin_handles();
        let admin = AdminService::new(metrics, auth, upstreams);
        let mut admin = pingora::services::listening::Service::new("admin".into(), admin);
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    let metrics_for_edge = parts.api.admin_handles().0;
    let gateway = Gateway(parts.api);
    exit_when_drained(&server, gateway.in_flight());
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 (TLS with ALPN) bounds its header block itself; HTTP/1 heads are bounded by the
    // edge layer.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(config.server.max_header_bytes).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2);
    let limits = EdgeLimits {
        max_header_bytes: config.server.max_header_bytes,
        header_timeout: config.server.header_timeout,
        keepalive_timeout: config.server.keepalive_timeout,
    };
    let mut proxy = pingora::services::listening::Service::new(
        "upload-gateway".into(),
        EdgeApp::new(proxy, limits, metrics_for_edge),
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        for addr in &config.server.tls_listen {
            let mut tls =
                TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
                    .map_err(|e| StartError::Pingora(e.to_string()))?;
            tls.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, tls);
        }
    }

    server.add_service(proxy);
    server.add_services(parts.services);
    Ok(server)
}

/// The upload API's treatment assembled from a [`Config`], for a server of one's own: the
/// part, and the background services it needs (upstream health checks, JWKS refresh), which
/// must be added to the same server. The key set is loaded once before this returns (bounded
/// by a few seconds), so the first requests are not refused for want of keys.
pub struct Parts {
    /// The treatment, to call from a `ProxyHttp`'s phases (or to wrap in [`Gateway`]).
    pub api: UploadApi,
    /// Add them to the server: `server.add_services(parts.services)`.
    pub services: Vec<Box<dyn ServiceWithDependents>>,
}

/// Builds the [`Parts`] for `config` on `server` (whose configuration sets the upstream
/// connection pool).
pub fn parts(config: Arc<Config>, server: &Server) -> Result<Parts, StartError> {
    let metrics = Arc::new(Metrics::new()?);

    let mut upstreams =
        LoadBalancer::<RoundRobin>::try_from_iter(config.upstream.servers.iter().copied())
            .map_err(|e| StartError::Pingora(e.to_string()))?;
    let mut health_check = TcpHealthCheck::new();
    health_check.peer_template.options.connection_timeout = Some(config.upstream.connect_timeout);
    upstreams.set_health_check(health_check);
    upstreams.health_check_frequency = Some(config.upstream.health_check_interval);
    let health_service = background_service("upstream health checks", upstreams);
    let upstreams = health_service.task();

    let auth = Arc::new(
        Authenticator::new(&config.auth, metrics.clone())
            .map_err(|e| StartError::Pingora(e.to_string()))?,
    );
    load_keys_before_serving(&auth);
    let jwks_service = background_service("jwks refresh", JwksRefresher::new(auth.clone()));

    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    Ok(Parts {
        api: UploadApi::new(config, upstreams, auth, metrics, connector),
        services: vec![Box::new(health_service), Box::new(jwks_service)],
    })
}
