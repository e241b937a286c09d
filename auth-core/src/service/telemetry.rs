//! Telemetry: the tracing subscriber (pretty locally, JSON in production), the Prometheus
//! recorder, and a log capture for tests.
//!
//! Invariant: nothing here or in any filter logs the `Authorization` header, a token, a password
//! or a secret, at any level. The request log line carries method, path (never the query),
//! status, latency and the caller's `sub`.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::config::{Environment, LogFormat, LogSettings};

/// Installs the global tracing subscriber. `RUST_LOG` overrides `log.level`. Safe to call twice
/// (the second call does nothing).
pub fn init(log: &LogSettings, environment: Environment) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => environment == Environment::Production,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test binary); ours still renders what it records.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Sets the `build_info` gauge for a service.
pub fn record_build_info(service: &'static str) {
    metrics_handle();
    metrics::gauge!("build_info", "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// Everything the process logged, for tests that assert what must never be logged.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs a global subscriber with every target at TRACE, writing into one buffer, and
    /// returns it (the same one on every call in a process).
    pub fn install() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(EnvFilter::new("trace"))
                    .with_writer(capture.clone())
                    .with_ansi(false)
                    .try_init();
                capture
            })
            .clone()
    }

    /// What was logged so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The writer of one log event.
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.0.clone())
    }
}
