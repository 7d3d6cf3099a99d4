//! Roles, record categories and the role policy: the one table that says who may read and write
//! what. The server enforces it on every request; the CLI uses it only to warn early.
//!
//! | role        | reads, within a share made for that role | writes |
//! |-------------|------------------------------------------|--------|
//! | doctor      | every record in the share                | may attach records to the patient's vault |
//! | pharmacist  | only records of category `prescription`  | none |
//! | diagnostics | every record in the share                | none |
//! | patient     | own vault, shares, audit, notifications  | own vault |
//! | admin       | nothing of any patient                   | none (operates the server) |

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The one role every account has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns a vault; may self-register.
    Patient,
    /// Full access to what is shared with doctors; may attach records.
    Doctor,
    /// Partial access: prescriptions only.
    Pharmacist,
    /// Read-only access to what is shared with diagnostics staff.
    Diagnostics,
    /// The operator; sees no patient data.
    Admin,
}

/// What kind of document a record is. The server sees the category (it enforces the policy on it)
/// but never the title or file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Laboratory results.
    Lab,
    /// Imaging: X-ray, MRI, CT, ultrasound.
    Imaging,
    /// Prescriptions: the only category pharmacists can read.
    Prescription,
    /// Clinical notes, letters, referrals.
    Note,
    /// Anything else.
    Other,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 5] = [
        Role::Patient,
        Role::Doctor,
        Role::Pharmacist,
        Role::Diagnostics,
        Role::Admin,
    ];

    /// The lowercase name used on the wire and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Pharmacist => "pharmacist",
            Role::Diagnostics => "diagnostics",
            Role::Admin => "admin",
        }
    }

    /// Whether a share can be made for this role (providers only).
    pub fn is_provider(self) -> bool {
        matches!(self, Role::Doctor | Role::Pharmacist | Role::Diagnostics)
    }

    /// Whether an account of this role may be created without an operator's invite.
    pub fn may_self_register(self) -> bool {
        self == Role::Patient
    }

    /// Whether this role owns a vault (uploads, shares, audit log, notifications).
    pub fn owns_vault(self) -> bool {
        self == Role::Patient
    }

    /// Whether this role, holding a share made for it, may read a record of `category`.
    pub fn may_read(self, category: Category) -> bool {
        match self {
            Role::Doctor | Role::Diagnostics => true,
            Role::Pharmacist => category == Category::Prescription,
            Role::Patient | Role::Admin => false,
        }
    }

    /// Whether this role, holding a share made for it, may attach new records to the patient's vault.
    pub fn may_attach(self) -> bool {
        self == Role::Doctor
    }

    /// A one-line description of the role's rights, for help texts and warnings.
    pub fn rights(self) -> &'static str {
        match self {
            Role::Patient => "own vault, shares, audit and notifications",
            Role::Doctor => {
                "reads every shared record and may attach notes, prescriptions and referrals"
            }
            Role::Pharmacist => "reads only prescriptions",
            Role::Diagnostics => "reads every shared record, writes nothing",
            Role::Admin => "operates the server, reads no patient data",
        }
    }
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 5] = [
        Category::Lab,
        Category::Imaging,
        Category::Prescription,
        Category::Note,
        Category::Other,
    ];

    /// The lowercase name used on the wire and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Lab => "lab",
            Category::Imaging => "imaging",
            Category::Prescription => "prescription",
            Category::Note => "note",
            Category::Other => "other",
        }
    }
}

/// A role or category name that HealthLock does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct UnknownName {
    kind: &'static str,
    value: String,
    expected: String,
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                kind: "role",
                value: s.to_owned(),
                expected: Role::ALL.map(Role::as_str).join(", "),
            })
    }
}

impl FromStr for Category {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                kind: "category",
                value: s.to_owned(),
                expected: Category::ALL.map(Category::as_str).join(", "),
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The design's role table, spelled out cell by cell.
    #[test]
    fn role_table() {
        for c in Category::ALL {
            assert!(Role::Doctor.may_read(c));
            assert!(Role::Diagnostics.may_read(c));
            assert_eq!(Role::Pharmacist.may_read(c), c == Category::Prescription);
            assert!(!Role::Patient.may_read(c));
            assert!(!Role::Admin.may_read(c));
        }
        let attach: Vec<_> = Role::ALL.into_iter().filter(|r| r.may_attach()).collect();
        assert_eq!(attach, [Role::Doctor]);
        let providers: Vec<_> = Role::ALL.into_iter().filter(|r| r.is_provider()).collect();
        assert_eq!(
            providers,
            [Role::Doctor, Role::Pharmacist, Role::Diagnostics]
        );
        let self_reg: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.may_self_register())
            .collect();
        assert_eq!(self_reg, [Role::Patient]);
    }

    #[test]
    fn names_parse() {
        assert_eq!("Doctor".parse::<Role>().unwrap(), Role::Doctor);
        assert_eq!(
            "prescription".parse::<Category>().unwrap(),
            Category::Prescription
        );
        let err = "nurse".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("doctor, pharmacist"), "{err}");
    }
}
