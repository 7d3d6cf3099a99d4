//! HealthLock's envelope and metadata formats against files made by the reference Go `age` CLI
//! (see tests/vectors/README.md).

use healthlock_common::envelope::{RecordKey, RecordMeta, open};
use healthlock_common::keys::{identity_from_seed, parse_identity};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).unwrap()
}

#[test]
fn reference_made_envelope_metadata_and_body_open() {
    let patient = identity_from_seed(&[7u8; 32]);
    let key = RecordKey::open_envelope(&patient, &read("envelope-to-seed7.age")).unwrap();
    let expected = parse_identity(&String::from_utf8(read("record-key.txt")).unwrap()).unwrap();
    assert_eq!(
        key.recipient().to_string(),
        expected.to_public().to_string()
    );

    let meta = RecordMeta::open(&key, &read("meta.age")).unwrap();
    assert_eq!(
        meta,
        RecordMeta {
            title: "HIV test".into(),
            filename: "result.pdf".into(),
            size: 1234
        }
    );
    let body = open(key.identity(), &read("body.age")).unwrap();
    assert_eq!(&body[..], b"body made by the reference age CLI\n");
}

#[test]
fn the_wrong_identity_opens_nothing() {
    let stranger = identity_from_seed(&[8u8; 32]);
    assert!(RecordKey::open_envelope(&stranger, &read("envelope-to-seed7.age")).is_err());
    let mut damaged = read("envelope-to-seed7.age");
    let n = damaged.len();
    damaged[n - 5] ^= 1;
    assert!(RecordKey::open_envelope(&identity_from_seed(&[7u8; 32]), &damaged).is_err());
}
