//! Upstream addresses from `upstream.servers`, resolved at run time (Pingora's
//! `ServiceDiscovery`, run by the load balancer's background service every
//! `upstream.resolve_interval_ms`).
//!
//! Every address a name resolves to becomes a backend (a headless Service is followed). A name
//! that fails to resolve keeps the addresses it last had, so a resolver blip does not empty the
//! pool; a name that never resolved contributes nothing, and with no backend at all the gateway
//! is not ready and answers 502, it does not crash. Names go to the system resolver
//! (`/etc/hosts`, `/etc/resolv.conf`, as getaddrinfo reads them) or, with `upstream.dns_servers`,
//! straight to those servers (hickory-resolver).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;

use crate::config::UpstreamAddress;
use crate::metrics::Metrics;

/// One resolution never waits longer than this.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where names are resolved.
enum Resolver {
    /// getaddrinfo, through tokio's blocking pool.
    System,
    /// The configured DNS servers.
    Servers(Box<TokioResolver>),
}

/// The upstream servers' current addresses.
pub struct DnsDiscovery {
    servers: Vec<UpstreamAddress>,
    resolver: Resolver,
    /// Per configured entry, the addresses of its last successful resolution.
    last_good: Mutex<HashMap<usize, Vec<SocketAddr>>>,
    metrics: Arc<Metrics>,
}

impl DnsDiscovery {
    /// Discovery for `servers`, asking `dns_servers` (the system resolver when empty).
    pub fn new(
        servers: Vec<UpstreamAddress>,
        dns_servers: &[SocketAddr],
        metrics: Arc<Metrics>,
    ) -> Self {
        let resolver = if dns_servers.is_empty() {
            Resolver::System
        } else {
            let mut config = ResolverConfig::new();
            for addr in dns_servers {
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            let mut builder =
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
            let options = builder.options_mut();
            options.timeout = RESOLVE_TIMEOUT;
            options.attempts = 1;
            // Resolution runs on a schedule of its own: a cached answer would hide a change.
            options.cache_size = 0;
            options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
            Resolver::Servers(Box::new(builder.build()))
        };
        Self {
            servers,
            resolver,
            last_good: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    async fn resolve(&self, server: &UpstreamAddress) -> Result<Vec<SocketAddr>, String> {
        let lookup = async {
            match &self.resolver {
                Resolver::System => tokio::net::lookup_host((server.host.as_str(), server.port))
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
                    .map_err(|e| e.to_string()),
                Resolver::Servers(resolver) => resolver
                    .lookup_ip(server.host.as_str())
                    .await
                    .map(|ips| {
                        ips.iter()
                            .map(|ip| SocketAddr::new(ip, server.port))
                            .collect()
                    })
                    .map_err(|e| e.to_string()),
            }
        };
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) if addrs.is_empty() => Err("no address".to_owned()),
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
        }
    }

    /// The current addresses of every entry, in configured order, without duplicates.
    pub async fn addresses(&self) -> Vec<SocketAddr> {
        let mut all = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            let addrs = match server.literal() {
                Some(addr) => vec![addr],
                None => match self.resolve(server).await {
                    Ok(mut addrs) => {
                        addrs.sort_unstable();
                        addrs.dedup();
                        self.remember(index, server, &addrs);
                        addrs
                    }
                    Err(cause) => {
                        self.metrics.upstream_resolve_errors.inc();
                        let kept = self.kept(index);
                        tracing::warn!(
                            upstream = %server,
                            cause = %cause,
                            kept_addresses = kept.len(),
                            "upstream name did not resolve; keeping its last addresses"
                        );
                        kept
                    }
                },
            };
            for addr in addrs {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
        }
        all
    }

    fn remember(&self, index: usize, server: &UpstreamAddress, addrs: &[SocketAddr]) {
        let Ok(mut last) = self.last_good.lock() else {
            return;
        };
        let changed = last.get(&index).is_none_or(|old| old.as_slice() != addrs);
        if changed {
            tracing::info!(
                upstream = %server,
                addresses = ?addrs,
                "upstream name resolved"
            );
            last.insert(index, addrs.to_vec());
        }
    }

    fn kept(&self, index: usize) -> Vec<SocketAddr> {
        self.last_good
            .lock()
            .ok()
            .and_then(|last| last.get(&index).cloned())
            .unwrap_or_default()
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for addr in self.addresses().await {
            backends.insert(Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                weight: 1,
                ext: http::Extensions::new(),
            });
        }
        Ok((backends, HashMap::new()))
    }
}
