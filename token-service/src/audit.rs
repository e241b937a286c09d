//! Audit events: one structured event per sign-in (success or failure), admin action and key
//! rotation, on the tracing target `audit` (route it to its own sink with
//! `log.level = "info,audit=info"` or a subscriber filter). Fields: `event`, `outcome`,
//! `username`, `client_ip`, and what the action touched. Never a password or a token.

/// Emits an audit event: `audit!(event = "sign_in", outcome = "success", username = %u, ...)`.
#[macro_export]
macro_rules! audit {
    ($($field:tt)*) => {
        ::tracing::info!(target: "audit", $($field)*)
    };
}
