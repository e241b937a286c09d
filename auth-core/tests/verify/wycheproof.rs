//! Wycheproof vectors through auth-core's own signature check, the one requests use
//! ([`auth_core::verify::verify_signature`]): no invalid vector accepted, every valid one accepted.

use auth_core::keys::{Alg, VerifyingKey};
use auth_core::verify::verify_signature;
use wycheproof::TestResult;

fn run(
    alg: Alg,
    groups: impl IntoIterator<Item = (Vec<u8>, Vec<(usize, TestResult, Vec<u8>, Vec<u8>)>)>,
) -> (usize, usize) {
    let (mut valid, mut invalid) = (0, 0);
    for (der, tests) in groups {
        let key = VerifyingKey::from_spki_der(&der);
        for (id, result, msg, sig) in tests {
            let accepted = key
                .as_ref()
                .is_ok_and(|k| verify_signature(k, alg, &msg, &sig).is_ok());
            match result {
                TestResult::Invalid => {
                    assert!(!accepted, "{alg} tcId {id}: invalid vector accepted");
                    invalid += 1;
                }
                TestResult::Valid => {
                    assert!(
                        accepted,
                        "{alg} tcId {id}: valid vector refused ({:?})",
                        key.as_ref().err()
                    );
                    valid += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    (valid, invalid)
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let groups = set.test_groups.into_iter().map(|g| {
        let tests = g
            .tests
            .into_iter()
            .map(|t| (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec()))
            .collect();
        (g.der.to_vec(), tests)
    });
    let (valid, invalid) = run(Alg::ES256, groups);
    assert!(
        valid > 100 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

/// JWS ES256 signatures are `r || s`: every DER-encoded signature, valid as DER or not, is refused.
#[test]
fn ecdsa_p256_der_signatures_are_all_refused() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let mut refused = 0;
    for g in set.test_groups {
        let key = VerifyingKey::from_spki_der(&g.der).unwrap();
        for t in g.tests {
            assert!(
                verify_signature(&key, Alg::ES256, &t.msg, &t.sig).is_err(),
                "tcId {}",
                t.tc_id
            );
            refused += 1;
        }
    }
    assert!(refused > 100);
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap();
    let groups = set.test_groups.into_iter().map(|g| {
        let tests = g
            .tests
            .into_iter()
            .map(|t| (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec()))
            .collect();
        (g.der.to_vec(), tests)
    });
    let (valid, invalid) = run(Alg::RS256, groups);
    assert!(
        valid > 0 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let groups = set.test_groups.into_iter().map(|g| {
        let tests = g
            .tests
            .into_iter()
            .map(|t| (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec()))
            .collect();
        (g.der.to_vec(), tests)
    });
    let (valid, invalid) = run(Alg::EdDSA, groups);
    assert!(
        valid > 0 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

/// A key only verifies the algorithm of its family.
#[test]
fn algorithm_must_fit_the_key() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let g = &set.test_groups[0];
    let key = VerifyingKey::from_spki_der(&g.der).unwrap();
    let t = g
        .tests
        .iter()
        .find(|t| t.result == TestResult::Valid)
        .unwrap();
    assert!(verify_signature(&key, Alg::EdDSA, &t.msg, &t.sig).is_ok());
    for alg in [Alg::RS256, Alg::ES256, Alg::HS256] {
        assert_eq!(
            verify_signature(&key, alg, &t.msg, &t.sig),
            Err(auth_core::AuthErrorKind::Algorithm)
        );
    }
}
