//! Fills a stopped server's data directory with a large history through the server's own store
//! code, so that `records`, `audit --since`, `audit --verify` and server start can be timed at
//! the scale issue 5 names: by default 100,000 records and 1,000,000 audit events.
//!
//! The timed patient is a new account with the keys and password of a template account that was
//! registered with the real CLI, so `healthlock login` works for it and its records' envelopes
//! and titles really are sealed to its key; being new, its log can start two years back (a log's
//! times never decrease, so history cannot be put behind the template's registration event).
//! The other patients are ids without accounts, whose records carry random bytes of the same
//! sizes. Events are appended through the hash chain, spread over the past two years, so the log
//! verifies and `--since` has a history to search. Bodies are not written: listing never reads
//! them.

use anyhow::{Context, Result, bail};
use clap::Parser;
use healthlock_common::envelope::{RecordKey, RecordMeta};
use healthlock_common::{Category, RecordId, Role, UserId};
use healthlock_server::store::{NewEvent, RecordRow, Store};
use std::path::PathBuf;

/// Loads a data directory for the large-store benchmark. Stop the server first.
#[derive(Parser)]
struct Args {
    /// The server's data directory.
    #[arg(long)]
    data: PathBuf,
    /// A patient registered with the CLI, whose keys and password the timed patient reuses.
    #[arg(long)]
    template: String,
    /// The timed patient, created here; `healthlock login` as them with the template's password.
    #[arg(long)]
    patient: String,
    /// Records in the whole store.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Audit events in the whole store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Records of the named patient (part of --records).
    #[arg(long, default_value_t = 100)]
    own_records: u64,
    /// Audit events in the named patient's log (part of --events).
    #[arg(long, default_value_t = 1_000)]
    own_events: u64,
    /// How many patients share the rest.
    #[arg(long, default_value_t = 999)]
    others: u64,
}

/// Time slices the history is written in: one transaction each.
const SLICES: u64 = 1_000;
const DAY: u64 = 86_400;
/// Each record's ciphertext size: a lab report's, small enough that 100,000 fit in one vault's
/// default quota.
const SIZE: u64 = 32 * 1024;

fn main() -> Result<()> {
    let a = Args::parse();
    if a.own_records > a.records || a.own_events > a.events || a.others == 0 {
        bail!("--own-records and --own-events are parts of --records and --events");
    }
    let store = Store::open(&a.data.join("healthlock.redb"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot open the store (is the server still running?)")?;
    let mut patient = store
        .user_by_name(&a.template.to_lowercase())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no account named {}", a.template))?;
    if patient.account.role != Role::Patient {
        bail!("{} is not a patient", a.template);
    }
    patient.account.id = UserId::random();
    patient.account.username = a.patient.to_lowercase();
    let created = store
        .write(|tx| tx.insert_user(&patient))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !created {
        bail!("{} exists already: load a fresh data directory", a.patient);
    }
    let recipient: age::x25519::Recipient = patient
        .account
        .age_recipient
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Who holds what: the named patient first, then the others, sharing the rest evenly.
    let mut owners = vec![(patient.account.id.clone(), a.own_records, a.own_events)];
    for i in 0..a.others {
        let share = |total: u64, own: u64| {
            let rest = total - own;
            rest / a.others + u64::from(i < rest % a.others)
        };
        owners.push((
            UserId::random(),
            share(a.records, a.own_records),
            share(a.events, a.own_events),
        ));
    }
    let doctors: Vec<UserId> = (0..50).map(|_| UserId::random()).collect();
    let now = healthlock_common::time::now();
    let start = now - 730 * DAY;
    let step = (729 * DAY) / SLICES;

    let mut ids: Vec<Vec<RecordId>> = vec![Vec::new(); owners.len()];
    let (mut records, mut events) = (0u64, 0u64);
    for slice in 0..SLICES {
        let at = start + slice * step;
        store
            .write_as_of(at, |tx| {
                for (n, (owner, own_records, own_events)) in owners.iter().enumerate() {
                    for _ in part(*own_records, slice) {
                        let id = RecordId::random();
                        tx.put_record(&record_row(owner, &id, n == 0, &recipient, at))?;
                        ids[n].push(id);
                        records += 1;
                    }
                    for k in part(*own_events, slice) {
                        let record =
                            (!ids[n].is_empty()).then(|| ids[n][k as usize % ids[n].len()].clone());
                        tx.append_audit(
                            owner,
                            NewEvent {
                                actor: Some((
                                    doctors[k as usize % doctors.len()].clone(),
                                    Role::Doctor,
                                )),
                                action: if k % 3 == 0 {
                                    "share.open"
                                } else {
                                    "share.fetch"
                                },
                                share: None,
                                record,
                                refused: None,
                                client: Some(format!("203.0.113.{}", k % 250)),
                            },
                        )?;
                        events += 1;
                    }
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if slice % 100 == 99 {
            eprintln!("{}%: {records} records, {events} events", (slice + 1) / 10);
        }
    }
    println!(
        "loaded {records} records and {events} events for {} patients ({} and {} for {})",
        owners.len(),
        a.own_records,
        a.own_events,
        a.patient
    );
    Ok(())
}

/// The indices of `total` items that fall in time slice `slice` of [`SLICES`].
fn part(total: u64, slice: u64) -> std::ops::Range<u64> {
    (total * slice / SLICES)..(total * (slice + 1) / SLICES)
}

fn record_row(
    owner: &UserId,
    id: &RecordId,
    real: bool,
    recipient: &age::x25519::Recipient,
    created: u64,
) -> RecordRow {
    let (envelope, meta) = if real {
        let key = RecordKey::generate();
        let meta = RecordMeta {
            title: format!("seeded record {id}"),
            filename: format!("{id}.pdf"),
            size: SIZE - 300,
        };
        (key.seal_to(recipient), meta.seal(&key))
    } else {
        // The sizes of real ones (an X25519 age file of a key; of a short title).
        (
            healthlock_common::random_bytes::<250>().to_vec(),
            healthlock_common::random_bytes::<240>().to_vec(),
        )
    };
    RecordRow {
        id: id.clone(),
        owner: owner.clone(),
        category: Category::ALL[created as usize % Category::ALL.len()],
        size: SIZE,
        hash: format!("blake3:{}", "00".repeat(32)),
        seal: None,
        created,
        envelope,
        meta,
        added_by: None,
    }
}
