//! Property tests: every parser of outside input returns an error instead of panicking, and the
//! formats round-trip. (cargo-fuzz needs nightly; proptest runs in `cargo test` on stable.)

use healthlock_common::audit::{LinkedEntry, Verified, Verifier};
use healthlock_common::descriptor::SignedDescriptor;
use healthlock_common::envelope::{RecordKey, RecordMeta, open};
use healthlock_common::keys::identity_from_seed;
use healthlock_common::token::{ShareSecret, parse_link_or_token};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_secret_round_trips_through_token_and_link(bytes in any::<[u8; 16]>(), port in 1u16..) {
        let s = ShareSecret::from_bytes(bytes);
        let parsed = parse_link_or_token(&s.to_token()).unwrap();
        prop_assert_eq!(parsed.secret.share_id(), s.share_id());
        let origin = format!("https://clinic.example:{port}");
        let parsed = parse_link_or_token(&s.to_link(&origin)).unwrap();
        prop_assert_eq!(parsed.origin.as_deref(), Some(origin.as_str()));
    }

    #[test]
    fn the_token_parser_never_panics(input in ".{0,80}") {
        let _ = parse_link_or_token(&input);
    }

    #[test]
    fn token_like_garbage_is_refused(body in "[a-z2-7]{29}") {
        // A random body passes the 16-bit checksum about once in 65,536 tries.
        let r = parse_link_or_token(&format!("hl1{body}"));
        if let Ok(p) = r {
            prop_assert_eq!(p.secret.to_token(), format!("hl1{body}"));
        }
    }

    #[test]
    fn descriptor_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), sig in proptest::collection::vec(any::<u8>(), 0..80)) {
        let d = SignedDescriptor { bytes, signature: sig };
        let _ = d.parse_unverified();
        let _ = d.verify(&ShareSecret::from_bytes([1; 16]).signing_key().verifying_key());
    }

    #[test]
    fn envelope_and_meta_opening_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let id = identity_from_seed(&[3; 32]);
        let _ = open(&id, &bytes);
        let _ = RecordKey::open_envelope(&id, &bytes);
        let mut framed = b"age-encryption.org/v1\n".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = open(&id, &framed);
        let _ = RecordMeta::open(&RecordKey::generate(), &framed);
    }

    #[test]
    fn audit_entries_and_checkpoints_never_panic(entry in ".{0,200}", hash in "[0-9a-f]{0,70}") {
        let mut v = Verifier::new(Verified::default());
        let _ = v.feed(&LinkedEntry { entry, hash });
    }

    /// Any batch path — any index, any number of siblings, hex or not — is checked without a
    /// panic, and none makes a forged signature verify.
    #[test]
    fn batch_paths_never_panic_or_verify_a_forgery(
        index in any::<u32>(),
        siblings in proptest::collection::vec("[0-9a-f]{64}|[0-9a-z]{0,70}", 0..70),
        signature in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        let checkpoint = healthlock_common::audit::Checkpoint {
            origin: "https://hl.example".into(),
            log: healthlock_common::UserId::random(),
            size: 1,
            head: "00".repeat(32),
            signature,
            batch: Some(healthlock_common::audit::BatchPath { index, siblings }),
        };
        prop_assert!(checkpoint.verify(&key).is_err());
    }

    #[test]
    fn wire_json_never_panics(text in ".{0,300}") {
        let _ = serde_json::from_str::<healthlock_common::api::OpenResponse>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::CreateShareRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::RegisterRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::audit::Checkpoint>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::AuditPage>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::LoginRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::PreloginRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::OpenRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::AckRequest>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::LoginResponse>(&text);
        let _ = serde_json::from_str::<healthlock_common::api::ErrorResponse>(&text);
        let _ = serde_json::from_str::<healthlock_common::descriptor::ShareDescriptor>(&text);
        let _ = serde_json::from_str::<healthlock_common::audit::Entry>(&text);
    }
}
