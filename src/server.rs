//! Assembles and runs the Pingora server from a validated [`Config`]: the proxy service on every
//! listener, the upstream health checks, the JWKS refresher and the admin listener.
//!
//! It must never start a proxy that could forward without authentication: the key store starts
//! empty and every protected request is refused (503) until a key set loads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, Backends, LoadBalancer};
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{background_service, Opt};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

use crate::admin::AdminService;
use crate::config::Config;
use crate::jwks::{Authenticator, JwksRefresher};
use crate::metrics::Metrics;
use crate::proxy::edge::{EdgeApp, EdgeCors, EdgeLimits};
use crate::proxy::upstream::discovery::DnsDiscovery;
use crate::proxy::{Gateway, UploadApi};
use crate::signals::{PidFile, Signals};
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
    /// A listener could not open (the key is named).
    #[error(transparent)]
    Listener(#[from] crate::preflight::ListenerError),
    /// The pid file cannot be written.
    #[error("--pid-file {path}: cannot write it: {source}")]
    PidFile {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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

/// One attempt to load the key set and resolve the upstream names before the listeners open,
/// so a freshly started (or upgraded) instance does not answer its first requests with 503 or
/// 502. An IdP or DNS outage only delays the start by [`INITIAL_LOAD_TIMEOUT`]: the background
/// services keep trying.
/// The edge's refusals carry CORS headers as the proxy's answers do, when CORS is on.
fn edge_cors<SV>(edge: EdgeApp<SV>, config: &Config) -> EdgeApp<SV> {
    match &config.cors {
        Some(policy) => edge.with_cors(EdgeCors {
            api: config.api.clone(),
            policy: policy.clone(),
        }),
        None => edge,
    }
}

fn prepare_before_serving(auth: &Authenticator, upstreams: &LoadBalancer<RoundRobin>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The timer must be created inside the runtime.
    let _ = runtime.block_on(async {
        tokio::time::timeout(INITIAL_LOAD_TIMEOUT, async {
            tokio::join!(auth.refresh(), upstreams.update())
        })
        .await
    });
}

/// How long start-up waits for the first key set.
const INITIAL_LOAD_TIMEOUT: Duration = Duration::from_secs(3);

/// A server ready to run: [`Built::run`] serves until a signal ends it.
pub struct Built {
    server: Server,
    signals: Signals,
    pid_file: PidFile,
    daemon: bool,
    listeners: Vec<(String, SocketAddr)>,
}

impl Built {
    /// Serves until SIGTERM (drained), SIGINT or an upgrade; removes the pid file and exits 0.
    pub fn run(self) -> ! {
        if !self.daemon {
            if let Err(e) = self.pid_file.write() {
                // Checked writable in `build`: only a race can get here.
                tracing::error!(error = %e, "cannot write the pid file (--pid-file)");
            }
        }
        let summary: Vec<String> = self
            .listeners
            .iter()
            .map(|(key, addr)| format!("{key}={addr}"))
            .collect();
        tracing::info!(listeners = %summary.join(" "), "upload-gateway serving");
        let pid_file = self.pid_file.clone();
        self.server.run(RunArgs {
            shutdown_signal: Box::new(self.signals),
        });
        pid_file.remove();
        std::process::exit(0)
    }
}

/// Builds the whole server; call [`Built::run`] on the result. Fails, naming the key, when a
/// listener could not open (SPEC §5: fail fast).
pub fn build(config: Config, options: &RunOptions) -> Result<Built, StartError> {
    crate::preflight::check(&config, !options.upgrade)?;
    crate::preflight::exit_on_listener_panic();
    let config = Arc::new(config);
    let mut conf = ServerConf {
        threads: config.server.threads,
        // One thread has nothing to steal from: a current-thread runtime (Pingora's
        // "no steal" mode) then serves ready connections in turn.
        work_stealing: config.server.threads > 1,
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
    // Under --daemon Pingora writes its pid file (its default path when none is given).
    let pid_file = PidFile::new(match (&options.pid_file, options.daemon) {
        (Some(path), _) => Some(path.into()),
        (None, true) => Some(conf.pid_file.clone().into()),
        (None, false) => None,
    });
    // Fail fast on a pid file that cannot be written, before --daemon forks (the daemon would
    // die after the launcher had already exited 0).
    if let Some(path) = pid_file.path() {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| StartError::PidFile {
                path: path.display().to_string(),
                source,
            })?;
    }
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let parts = parts(config.clone(), &server)?;
    let listeners = crate::preflight::listeners(&config);
    if let Some(admin_addr) = config.observability.admin_listen {
        let (metrics, auth, upstreams) = parts.api.admin_handles();
        let serving: Vec<SocketAddr> = config
            .server
            .listen
            .iter()
            .chain(&config.server.tls_listen)
            .copied()
            .collect();
        let admin = AdminService::new(metrics, auth, upstreams, serving);
        let mut admin = pingora::services::listening::Service::new("admin".into(), admin);
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    let (metrics_for_edge, auth, _) = parts.api.admin_handles();
    let spans = parts.api.span_export();
    let gateway = Gateway(parts.api);
    let signals = Signals::new(
        auth,
        gateway.in_flight(),
        server.watch_execution_phase(),
        pid_file.clone(),
        config.server.shutdown_grace,
        spans,
    );
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
        edge_cors(EdgeApp::new(proxy, limits, metrics_for_edge), &config),
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
    // Again, now that start-up has waited for the key set: the window in which a port can be
    // taken before Pingora binds it is now only the time to start its threads (Pingora itself
    // retries a taken port for 30 s, then panics, which `exit_on_listener_panic` turns into an
    // exit).
    crate::preflight::check(&config, !options.upgrade)?;
    Ok(Built {
        server,
        signals,
        pid_file,
        daemon: options.daemon,
        listeners,
    })
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

    let discovery = DnsDiscovery::new(
        config.upstream.servers.clone(),
        &config.upstream.dns_servers,
        metrics.clone(),
    );
    let mut upstreams =
        LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
    upstreams.update_frequency = Some(config.upstream.resolve_interval);
    let mut health_check = TcpHealthCheck::new();
    health_check.peer_template.options.connection_timeout = Some(config.upstream.connect_timeout);
    upstreams.set_health_check(health_check);
    upstreams.health_check_frequency = Some(config.upstream.health_check_interval);
    let auth = Arc::new(
        Authenticator::new(&config.auth, metrics.clone())
            .map_err(|e| StartError::Pingora(e.to_string()))?,
    );
    prepare_before_serving(&auth, &upstreams);
    let health_service = background_service("upstream resolution and health checks", upstreams);
    let upstreams = health_service.task();
    let jwks_service = background_service("jwks refresh", JwksRefresher::new(auth.clone()));

    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let api = UploadApi::new(config, upstreams, auth, metrics, connector);
    let mut services: Vec<Box<dyn ServiceWithDependents>> =
        vec![Box::new(health_service), Box::new(jwks_service)];
    if let Some(backend) = api.rate_limit_backend() {
        services.push(Box::new(background_service(
            "rate limit redis",
            crate::rate_limit::shared::BackendService(backend),
        )));
    }
    Ok(Parts { api, services })
}
