//! Denials are logged at debug with `kid` and `sub`; a token never appears in any log line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use testkit::{keys, mint};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn denial_is_logged_with_kid_and_sub_but_never_the_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let expired = mint(&keys::ec()).claim("exp", 1).sign();
    let forged = mint(&keys::ec()).with_signature(&[7; 64]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let auth = auth(&pem_settings("ec-public.pem"));
            assert!(auth.verify(&expired).await.is_err());
            assert!(auth.verify(&forged).await.is_err());
        })
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let kid = keys::ec().kid.unwrap();
    let expired_line = logs
        .lines()
        .find(|l| l.contains("reason=\"expired\""))
        .expect(&logs);
    assert!(expired_line.contains("DEBUG"), "{expired_line}");
    assert!(expired_line.contains(&kid), "{expired_line}");
    assert!(expired_line.contains("alice"), "{expired_line}");
    let forged_line = logs
        .lines()
        .find(|l| l.contains("reason=\"signature\""))
        .expect(&logs);
    assert!(forged_line.contains(&kid), "{forged_line}");
    for token in [&expired, &forged] {
        for part in token.split('.').filter(|p| !p.is_empty()) {
            assert!(!logs.contains(part), "a token part was logged: {logs}");
        }
    }
}
