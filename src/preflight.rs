//! Fail fast (SPEC §5): before anything serves, every listener's address is bound for a moment
//! and the TLS certificate and key are read and matched, so a listener that could not open
//! stops the process with a message naming its key instead of leaving a process without a
//! proxy port. `check` runs the same checks.
//!
//! Pingora binds its listeners later, inside a service thread, and panics there on failure
//! ("Failed to build listeners"); [`exit_on_listener_panic`] turns that panic, should the port
//! be taken in between, into the same non-zero exit.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;

/// A listener that cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ListenerError {
    /// The key at fault (`server.listen`, `server.tls_cert`, ...).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// Every address the process listens on, with the key that configures it.
pub fn listeners(config: &Config) -> Vec<(String, SocketAddr)> {
    let mut all = Vec::new();
    for addr in &config.server.listen {
        all.push(("server.listen".to_owned(), *addr));
    }
    for addr in &config.server.tls_listen {
        all.push(("server.tls_listen".to_owned(), *addr));
    }
    if let Some(addr) = config.observability.admin_listen {
        all.push(("observability.admin_listen".to_owned(), addr));
    }
    all
}

/// Checks that every listener could open now: the addresses bind (then are released), the TLS
/// material loads and its key matches its certificate. `bind = false` skips the bind (an
/// upgrade inherits its sockets from the running instance).
pub fn check(config: &Config, bind: bool) -> Result<(), ListenerError> {
    if bind {
        for (key, addr) in listeners(config) {
            try_bind(addr).map_err(|e| ListenerError {
                key,
                problem: format!("cannot listen on {addr}: {e}"),
            })?;
        }
    }
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        if !config.server.tls_listen.is_empty() {
            check_tls(cert, key)?;
        }
    }
    Ok(())
}

/// Binds `addr` as Pingora would (SO_REUSEADDR, so a port in TIME_WAIT is not mistaken for a
/// taken one) and releases it. SO_REUSEPORT as well, so two `check` runs at the same moment do
/// not take each other for a running listener; a real listener (Pingora's have no
/// SO_REUSEPORT) still refuses the bind.
fn try_bind(addr: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1)?;
    Ok(())
}

/// The certificate chain and key load, and the key is the certificate's.
fn check_tls(cert: &Path, key: &Path) -> Result<(), ListenerError> {
    use pingora::tls::sign::CertifiedKey;
    let cert_text = cert.to_string_lossy();
    let key_text = key.to_string_lossy();
    let loaded = pingora::tls::load_certs_and_key_files(&cert_text, &key_text).map_err(|e| {
        ListenerError {
            key: "server.tls_cert".to_owned(),
            problem: format!("cannot read the certificate or key: {e}"),
        }
    })?;
    let Some((certs, private_key)) = loaded else {
        // Tell which of the two holds nothing usable.
        let has_cert = pem_has(cert, "CERTIFICATE");
        return Err(ListenerError {
            key: if has_cert {
                "server.tls_key"
            } else {
                "server.tls_cert"
            }
            .to_owned(),
            problem: if has_cert {
                format!("{} holds no PEM private key", key.display())
            } else {
                format!("{} holds no PEM certificate", cert.display())
            },
        });
    };
    pingora::tls::install_default_crypto_provider();
    let Some(provider) = pingora::tls::CryptoProvider::get_default() else {
        return Ok(());
    };
    CertifiedKey::from_der(certs, private_key, provider).map_err(|e| ListenerError {
        key: "server.tls_key".to_owned(),
        problem: format!("{} does not fit {}: {e}", key.display(), cert.display()),
    })?;
    Ok(())
}

fn pem_has(path: &Path, label: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|text| text.contains(&format!("-----BEGIN {label}-----")))
        .unwrap_or(false)
}

/// Makes Pingora's panic on a listener it could not open end the process (exit status 1) with
/// a message naming the keys, instead of leaving it running without that port.
pub fn exit_on_listener_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Failed to build listeners") {
            tracing::error!(
                "a listener could not be opened (server.listen, server.tls_listen or \
                 observability.admin_listen): {message}"
            );
            eprintln!(
                "upload-gateway: a listener could not be opened (server.listen, \
                 server.tls_listen or observability.admin_listen): {message}"
            );
            std::process::exit(1);
        }
        previous(info);
    }));
}
