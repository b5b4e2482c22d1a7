//! The `/metrics` endpoint: a blocking tiny_http server on a thread of its own. Scrapes are
//! rare (seconds apart) and each one reads the ledger afresh, so one thread answers them in
//! turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use hami_ledger::paths::LedgerDir;
use tiny_http::{Header, Method, Response, Server};

use super::{MetricsError, ScrapeExtras, Scraper};

/// Content type of the answer: OpenMetrics text, which Prometheus reads (and asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (the port the kernel chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks for as long as the server runs (it stops only when its socket fails).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Binds `addr` and answers `GET /metrics` from a fresh view of `ledger` on a thread of its
/// own; returns once the socket is bound. Dropping the handle leaves the server running.
pub fn serve(
    addr: SocketAddr,
    ledger: LedgerDir,
    extras: Arc<dyn ScrapeExtras>,
) -> Result<MetricsServer, MetricsError> {
    let server = Server::http(addr).map_err(|err| MetricsError::Bind {
        addr,
        message: err.to_string(),
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| MetricsError::Bind {
            addr,
            message: "bound to something that is not an IP socket".into(),
        })?;
    let scraper = Scraper::new(ledger, extras);
    let thread = std::thread::Builder::new()
        .name("hami-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                answer(&scraper, request);
            }
        })
        .map_err(|err| MetricsError::Bind {
            addr,
            message: format!("cannot start the server thread: {err}"),
        })?;
    Ok(MetricsServer {
        addr: bound,
        thread,
    })
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn answer(scraper: &Scraper, request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or_default();
    let response = match (request.method(), path) {
        (Method::Get, "/metrics") => match scraper.scrape() {
            Ok(text) => {
                let response = Response::from_string(text);
                match header("Content-Type", CONTENT_TYPE) {
                    Some(content_type) => response.with_header(content_type),
                    None => response,
                }
            }
            Err(err) => Response::from_string(err.to_string()).with_status_code(500),
        },
        (Method::Get, _) => {
            Response::from_string("not found: metrics are at /metrics\n").with_status_code(404)
        }
        _ => Response::from_string("only GET is served\n").with_status_code(405),
    };
    // A scraper that hung up has nothing left to be told.
    let _ = request.respond(response);
}
