//! Users, roles and what they may do; and the cluster's id. All of it lives in the replicated
//! state, so every node agrees and snapshots carry it.
//!
//! The state is three records under keys that begin with [`SYSTEM_PREFIX`], which no client
//! command may name: the cluster id, every user, and every role. Keeping each table in one
//! bounded record ([`MAX_USERS`], [`MAX_ROLES`], [`MAX_GRANTS`], ...) lets them ride the store's
//! ordinary writes, flushes and snapshots, and makes `USER LIST` one read.
//!
//! A user has a password, stored as an argon2id hash in PHC form (hashed by the node that
//! proposes the change, never logged in the clear), and roles. A role grants `read` or
//! `readwrite` on key prefixes, and may grant `admin`: every key, membership changes, and user
//! and role management. The first leader of a cluster with auth on creates `root`, with the
//! `root` role (admin), from the password the operator gave ([`SystemWrite::Bootstrap`]).
//!
//! [`apply`] is deterministic, like every write: the same records and the same write give the
//! same records and answer on every node. A refused change answers an error and changes nothing.
//!
//! Not done: per-key deny rules, password policies, and lockout after failed logins.

use crate::protocol::message::{Cell, ErrorCode, Reply};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Keys that begin with these bytes belong to the system; client commands cannot name them.
pub const SYSTEM_PREFIX: &[u8] = b"\0kv/";
/// The most users, roles, roles per user, and grants per role; and the longest prefix a grant
/// names. Together they keep each record, and the `USER LIST` and `ROLE LIST` answers, near a
/// megabyte at most, well within a frame.
pub const MAX_USERS: usize = 1024;
pub const MAX_ROLES: usize = 256;
pub const MAX_ROLES_PER_USER: usize = 16;
pub const MAX_GRANTS: usize = 16;
pub const MAX_PREFIX_BYTES: usize = 256;
/// The longest user or role name.
pub const MAX_NAME_BYTES: usize = 64;
/// The name of the first user and of the role it holds.
pub const ROOT: &str = "root";

const CLUSTER_ID_KEY: &[u8] = b"\0kv/cluster-id";
const USERS_KEY: &[u8] = b"\0kv/users";
const ROLES_KEY: &[u8] = b"\0kv/roles";

/// Whether `key` is one of the system's.
pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(SYSTEM_PREFIX)
}

/// What a role may do with keys under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    ReadWrite,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "readwrite",
        }
    }
}

/// One permission a role grants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grant {
    /// Everything: all keys, membership changes, users and roles.
    Admin,
    /// `access` on every key that begins with `prefix` (all keys, for an empty prefix).
    Keys { access: Access, prefix: Bytes },
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Admin => f.write_str("admin"),
            Grant::Keys { access, prefix } => {
                write!(f, "{} on '{}'", access.as_str(), String::from_utf8_lossy(prefix))
            }
        }
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The password's argon2id hash, in PHC form.
    pub password: String,
    pub roles: BTreeSet<String>,
}

/// A role as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub grants: BTreeSet<Grant>,
}

/// A change to the system's records. This is what the log carries (inside
/// [`crate::command::Write::System`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemWrite {
    /// Names the cluster, if it has no name yet.
    ClusterId {
        id: String,
    },
    /// Creates `root` with this password hash and the `root` role, if there are no users yet.
    Bootstrap {
        root_password: String,
    },
    UserAdd {
        name: String,
        password: String,
    },
    UserDel {
        name: String,
    },
    UserPasswd {
        name: String,
        password: String,
    },
    UserGrant {
        name: String,
        role: String,
    },
    UserRevoke {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDel {
        name: String,
    },
    RoleGrant {
        name: String,
        grant: Grant,
    },
    RoleRevoke {
        name: String,
        grant: Grant,
    },
}

impl SystemWrite {
    /// At most how many bytes it takes encoded.
    pub fn encoded_len_estimate(&self) -> usize {
        let text = |s: &str| s.len() + 8;
        32 + match self {
            SystemWrite::ClusterId { id } => text(id),
            SystemWrite::Bootstrap { root_password } => text(root_password),
            SystemWrite::UserAdd { name, password } | SystemWrite::UserPasswd { name, password } => {
                text(name) + text(password)
            }
            SystemWrite::UserDel { name } | SystemWrite::RoleAdd { name } | SystemWrite::RoleDel { name } => {
                text(name)
            }
            SystemWrite::UserGrant { name, role } | SystemWrite::UserRevoke { name, role } => {
                text(name) + text(role)
            }
            SystemWrite::RoleGrant { name, grant } | SystemWrite::RoleRevoke { name, grant } => {
                text(name)
                    + match grant {
                        Grant::Admin => 8,
                        Grant::Keys { prefix, .. } => prefix.len() + 16,
                    }
            }
        }
    }
}

/// The system records as the store holds them: a key's value.
pub trait Records {
    fn get(&self, key: &[u8]) -> Option<Bytes>;
}

/// Records that a change can be applied to.
pub trait RecordsMut: Records {
    fn put(&mut self, key: &[u8], value: Bytes);
}

/// The users and roles, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Accounts {
    /// Decodes the two records (each absent until first written). An undecodable record, which
    /// only a bug could write, reads as empty, which grants nothing.
    pub fn load(records: &(impl Records + ?Sized)) -> Accounts {
        fn table<T: serde::de::DeserializeOwned + Default>(record: Option<Bytes>) -> T {
            record.and_then(|bytes| rmp_serde::from_slice(&bytes).ok()).unwrap_or_default()
        }
        Accounts { users: table(records.get(USERS_KEY)), roles: table(records.get(ROLES_KEY)) }
    }

    /// What `user` may do; `None` if there is no such user.
    pub fn principal(&self, user: &str) -> Option<Principal> {
        let record = self.users.get(user)?;
        let grants = record
            .roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flat_map(|r| r.grants.iter().cloned());
        Some(Principal { user: user.to_string(), grants: grants.collect() })
    }

    /// The `USER LIST` table.
    pub fn users_table(&self) -> Reply {
        let rows = self
            .users
            .iter()
            .map(|(name, user)| {
                let roles = user.roles.iter().cloned().collect::<Vec<_>>().join(",");
                vec![Cell::Text(name.clone()), Cell::Text(roles)]
            })
            .collect();
        Reply::Table { columns: vec!["user".into(), "roles".into()], rows }
    }

    /// The `ROLE LIST` table: one row per grant (a role with none has one row without).
    pub fn roles_table(&self) -> Reply {
        let mut rows = Vec::new();
        for (name, role) in &self.roles {
            if role.grants.is_empty() {
                rows.push(vec![Cell::Text(name.clone()), Cell::Nil, Cell::Nil]);
            }
            for grant in &role.grants {
                let (permission, prefix) = match grant {
                    Grant::Admin => ("admin".to_string(), Cell::Nil),
                    Grant::Keys { access, prefix } => (
                        access.as_str().to_string(),
                        Cell::Text(String::from_utf8_lossy(prefix).into_owned()),
                    ),
                };
                rows.push(vec![Cell::Text(name.clone()), Cell::Text(permission), prefix]);
            }
        }
        Reply::Table { columns: vec!["role".into(), "permission".into(), "prefix".into()], rows }
    }
}

/// A logged-in user and everything its roles grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    grants: Vec<Grant>,
}

/// What a command needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs<'a> {
    Nothing,
    /// Logged in, as anyone.
    Login,
    Keys {
        access: Access,
        keys: Vec<&'a [u8]>,
    },
    /// Access to every key the range can hold, whether it holds it now or not.
    Range {
        access: Access,
        range: &'a crate::command::KeyRange,
    },
    /// Everything each of these needs (a `TXN`'s parts).
    Each(Vec<Needs<'a>>),
    Admin,
    /// Admin, or being this user (changing one's own password).
    AdminOrSelf(&'a str),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.grants.contains(&Grant::Admin)
    }

    /// Whether this user may do what `needs` says; `Err` names what is missing.
    pub fn check(&self, needs: &Needs<'_>) -> Result<(), Reply> {
        let denied = |what: String| {
            Err(Reply::error(ErrorCode::PermissionDenied, format!("user '{}' lacks {what}", self.user)))
        };
        match needs {
            Needs::Nothing | Needs::Login => Ok(()),
            _ if self.is_admin() => Ok(()),
            Needs::Admin => denied("the admin permission".into()),
            Needs::AdminOrSelf(user) if *user == self.user => Ok(()),
            Needs::AdminOrSelf(_) => denied("the admin permission".into()),
            Needs::Keys { access, keys } => match keys.iter().find(|key| !self.may(*access, key)) {
                None => Ok(()),
                Some(key) => denied(format!("{} on '{}'", access.as_str(), String::from_utf8_lossy(key))),
            },
            Needs::Range { access, range } if self.may_range(*access, range) => Ok(()),
            Needs::Range { access, range } => denied(format!(
                "{} on every key from '{}' to {}",
                access.as_str(),
                String::from_utf8_lossy(&range.start),
                range
                    .end
                    .as_ref()
                    .map_or("the last".to_string(), |e| format!("'{}'", String::from_utf8_lossy(e)))
            )),
            Needs::Each(each) => each.iter().try_for_each(|needs| self.check(needs)),
        }
    }

    /// Whether one grant covers every key `range` can hold: the range lies within its prefix.
    fn may_range(&self, wanted: Access, range: &crate::command::KeyRange) -> bool {
        self.grants.iter().any(|grant| match grant {
            Grant::Admin => true,
            Grant::Keys { access, prefix } => {
                let within_end = match (crate::command::scan::prefix_end(prefix), &range.end) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(limit), Some(end)) => end.as_ref() <= limit.as_slice(),
                };
                range.start.as_ref() >= prefix.as_ref()
                    && within_end
                    && (*access == Access::ReadWrite || wanted == Access::Read)
            }
        })
    }

    fn may(&self, wanted: Access, key: &[u8]) -> bool {
        self.grants.iter().any(|grant| match grant {
            Grant::Admin => true,
            Grant::Keys { access, prefix } => {
                key.starts_with(prefix) && (*access == Access::ReadWrite || wanted == Access::Read)
            }
        })
    }
}

/// The cluster's id, once it has one.
pub fn cluster_id(records: &(impl Records + ?Sized)) -> Option<String> {
    records.get(CLUSTER_ID_KEY).map(|id| String::from_utf8_lossy(&id).into_owned())
}

/// Applies one change to the records and returns its answer. Deterministic; a refused change
/// (an error answer) writes nothing.
pub fn apply(records: &mut impl RecordsMut, write: &SystemWrite) -> Reply {
    let refused = |message: String| Reply::error(ErrorCode::Refused, message);
    let mut accounts = Accounts::load(records);
    let before = accounts.clone();
    let outcome: Result<(), String> = match write {
        SystemWrite::ClusterId { id } => {
            if cluster_id(records).is_none() {
                records.put(CLUSTER_ID_KEY, Bytes::from(id.clone()));
            }
            Ok(())
        }
        SystemWrite::Bootstrap { root_password } => {
            if accounts.users.is_empty() {
                accounts.roles.entry(ROOT.into()).or_default().grants.insert(Grant::Admin);
                let user =
                    User { password: root_password.clone(), roles: BTreeSet::from([ROOT.to_string()]) };
                accounts.users.insert(ROOT.into(), user);
            }
            Ok(())
        }
        SystemWrite::UserAdd { name, password } => {
            if accounts.users.contains_key(name) {
                Err(format!("user '{name}' exists"))
            } else if accounts.users.len() >= MAX_USERS {
                Err(format!("there are {MAX_USERS} users already, the most there can be"))
            } else {
                accounts
                    .users
                    .insert(name.clone(), User { password: password.clone(), roles: BTreeSet::new() });
                Ok(())
            }
        }
        SystemWrite::UserDel { name } => match accounts.users.remove(name) {
            Some(_) if name == ROOT => Err("user 'root' cannot be deleted".into()),
            Some(_) => Ok(()),
            None => Err(format!("no user '{name}'")),
        },
        SystemWrite::UserPasswd { name, password } => match accounts.users.get_mut(name) {
            Some(user) => {
                user.password = password.clone();
                Ok(())
            }
            None => Err(format!("no user '{name}'")),
        },
        SystemWrite::UserGrant { name, role } => {
            if !accounts.roles.contains_key(role) {
                Err(format!("no role '{role}'"))
            } else {
                match accounts.users.get_mut(name) {
                    Some(user) if user.roles.len() >= MAX_ROLES_PER_USER && !user.roles.contains(role) => {
                        Err(format!(
                            "user '{name}' has {MAX_ROLES_PER_USER} roles already, the most it can have"
                        ))
                    }
                    Some(user) => {
                        user.roles.insert(role.clone());
                        Ok(())
                    }
                    None => Err(format!("no user '{name}'")),
                }
            }
        }
        SystemWrite::UserRevoke { name, role } => match accounts.users.get_mut(name) {
            Some(_) if name == ROOT && role == ROOT => Err("user 'root' keeps the role 'root'".into()),
            Some(user) => match user.roles.remove(role) {
                true => Ok(()),
                false => Err(format!("user '{name}' does not have the role '{role}'")),
            },
            None => Err(format!("no user '{name}'")),
        },
        SystemWrite::RoleAdd { name } => {
            if accounts.roles.contains_key(name) {
                Err(format!("role '{name}' exists"))
            } else if accounts.roles.len() >= MAX_ROLES {
                Err(format!("there are {MAX_ROLES} roles already, the most there can be"))
            } else {
                accounts.roles.insert(name.clone(), Role::default());
                Ok(())
            }
        }
        SystemWrite::RoleDel { name } => {
            if name == ROOT {
                Err("role 'root' cannot be deleted".into())
            } else if accounts.roles.remove(name).is_none() {
                Err(format!("no role '{name}'"))
            } else {
                for user in accounts.users.values_mut() {
                    user.roles.remove(name);
                }
                Ok(())
            }
        }
        SystemWrite::RoleGrant { name, grant } => match accounts.roles.get_mut(name) {
            Some(role) if role.grants.len() >= MAX_GRANTS && !role.grants.contains(grant) => {
                Err(format!("role '{name}' has {MAX_GRANTS} grants already, the most it can have"))
            }
            Some(role) => {
                role.grants.insert(grant.clone());
                Ok(())
            }
            None => Err(format!("no role '{name}'")),
        },
        SystemWrite::RoleRevoke { name, grant } => match accounts.roles.get_mut(name) {
            Some(_) if name == ROOT && *grant == Grant::Admin => Err("role 'root' keeps admin".into()),
            Some(role) => match role.grants.remove(grant) {
                true => Ok(()),
                false => Err(format!("role '{name}' does not grant {grant}")),
            },
            None => Err(format!("no role '{name}'")),
        },
    };
    match outcome {
        Err(message) => refused(message),
        Ok(()) => {
            if accounts.users != before.users {
                records.put(USERS_KEY, encode(&accounts.users));
            }
            if accounts.roles != before.roles {
                records.put(ROLES_KEY, encode(&accounts.roles));
            }
            Reply::ok()
        }
    }
}

fn encode<T: Serialize>(table: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(table).expect("the tables always serialize"))
}

/// Hashes a password with argon2id and a fresh salt, in PHC form. Deliberately slow (it is
/// memory-hard): call it off the async threads.
pub fn hash_password(password: &[u8]) -> String {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password)
        .expect("hashing with default parameters succeeds")
        .to_string()
}

/// Whether `password` matches the PHC `hash`. As slow as hashing: off the async threads.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::password_hash::phc::PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password, &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Map(BTreeMap<Vec<u8>, Bytes>);

    impl Records for Map {
        fn get(&self, key: &[u8]) -> Option<Bytes> {
            self.0.get(key).cloned()
        }
    }

    impl RecordsMut for Map {
        fn put(&mut self, key: &[u8], value: Bytes) {
            self.0.insert(key.to_vec(), value);
        }
    }

    fn keys(access: Access, prefix: &str) -> Grant {
        Grant::Keys { access, prefix: Bytes::from(prefix.to_string()) }
    }

    fn setup() -> Map {
        let mut map = Map::default();
        for change in [
            SystemWrite::Bootstrap { root_password: "h0".into() },
            SystemWrite::UserAdd { name: "alice".into(), password: "h1".into() },
            SystemWrite::RoleAdd { name: "app".into() },
            SystemWrite::RoleGrant { name: "app".into(), grant: keys(Access::Read, "app/") },
            SystemWrite::RoleGrant { name: "app".into(), grant: keys(Access::ReadWrite, "app/own/") },
            SystemWrite::UserGrant { name: "alice".into(), role: "app".into() },
        ] {
            assert_eq!(apply(&mut map, &change), Reply::ok(), "{change:?}");
        }
        map
    }

    #[test]
    fn roles_grant_read_or_readwrite_on_prefixes_and_admin_everything() {
        let accounts = Accounts::load(&setup());
        let alice = accounts.principal("alice").unwrap();
        let read = |key: &'static str| Needs::Keys { access: Access::Read, keys: vec![key.as_bytes()] };
        let write = |key: &'static str| Needs::Keys { access: Access::ReadWrite, keys: vec![key.as_bytes()] };
        assert!(alice.check(&read("app/x")).is_ok());
        assert!(alice.check(&write("app/own/x")).is_ok());
        let Err(Reply::Error { code, message }) = alice.check(&write("app/x")) else { panic!() };
        assert_eq!(
            (code, message.as_str()),
            (ErrorCode::PermissionDenied, "user 'alice' lacks readwrite on 'app/x'")
        );
        assert!(alice.check(&read("other/y")).is_err());
        assert!(alice.check(&Needs::Admin).is_err());
        assert!(alice.check(&Needs::AdminOrSelf("alice")).is_ok());
        assert!(alice.check(&Needs::AdminOrSelf("root")).is_err());
        let root = accounts.principal("root").unwrap();
        assert!(root.check(&Needs::Admin).is_ok() && root.check(&write("anything")).is_ok());
        assert!(accounts.principal("mallory").is_none());
    }

    #[test]
    fn a_range_is_granted_only_if_one_prefix_covers_every_key_it_can_hold() {
        use crate::command::KeyRange;
        let accounts = Accounts::load(&setup());
        let alice = accounts.principal("alice").unwrap();
        let range = |start: &str, end: Option<&str>| KeyRange {
            start: Bytes::from(start.to_string()),
            end: end.map(|e| Bytes::from(e.to_string())),
        };
        let may = |range: &KeyRange, access| alice.check(&Needs::Range { access, range }).is_ok();
        assert!(may(&KeyRange::prefix(b"app/"), Access::Read));
        assert!(may(&range("app/a", Some("app/b")), Access::Read));
        assert!(!may(&range("app/a", None), Access::Read), "runs past the prefix");
        assert!(!may(&range("app", Some("app/b")), Access::Read), "starts before it");
        assert!(!may(&KeyRange::prefix(b""), Access::Read));
        assert!(!may(&KeyRange::prefix(b"app/"), Access::ReadWrite));
        assert!(may(&KeyRange::prefix(b"app/own/"), Access::ReadWrite));
        let root = accounts.principal("root").unwrap();
        assert!(root.check(&Needs::Range { access: Access::ReadWrite, range: &range("", None) }).is_ok());
        let each = Needs::Each(vec![
            Needs::Keys { access: Access::Read, keys: vec![b"app/x"] },
            Needs::Keys { access: Access::ReadWrite, keys: vec![b"app/y"] },
        ]);
        let Err(Reply::Error { message, .. }) = alice.check(&each) else {
            panic!("a TXN part is not granted")
        };
        assert!(message.contains("readwrite on 'app/y'"), "{message}");
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let mut map = setup();
        let before = map.0.clone();
        for change in [
            SystemWrite::UserAdd { name: "alice".into(), password: "x".into() },
            SystemWrite::UserDel { name: "root".into() },
            SystemWrite::UserDel { name: "nobody".into() },
            SystemWrite::UserGrant { name: "alice".into(), role: "nope".into() },
            SystemWrite::UserRevoke { name: "root".into(), role: "root".into() },
            SystemWrite::RoleDel { name: "root".into() },
            SystemWrite::RoleRevoke { name: "root".into(), grant: Grant::Admin },
            SystemWrite::RoleRevoke { name: "app".into(), grant: Grant::Admin },
            SystemWrite::Bootstrap { root_password: "again".into() },
        ] {
            let answer = apply(&mut map, &change);
            assert!(answer.is_error() || matches!(change, SystemWrite::Bootstrap { .. }), "{change:?}");
            assert_eq!(map.0, before, "{change:?} changed something");
        }
    }

    #[test]
    fn deleting_a_role_takes_it_from_its_users() {
        let mut map = setup();
        assert_eq!(apply(&mut map, &SystemWrite::RoleDel { name: "app".into() }), Reply::ok());
        let accounts = Accounts::load(&map);
        assert!(accounts.users["alice"].roles.is_empty());
        assert!(
            accounts
                .principal("alice")
                .unwrap()
                .check(&Needs::Keys { access: Access::Read, keys: vec![b"app/x"] })
                .is_err()
        );
    }

    #[test]
    fn the_cluster_id_is_set_once() {
        let mut map = Map::default();
        assert_eq!(cluster_id(&map), None);
        apply(&mut map, &SystemWrite::ClusterId { id: "a".into() });
        apply(&mut map, &SystemWrite::ClusterId { id: "b".into() });
        assert_eq!(cluster_id(&map).as_deref(), Some("a"));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password(b"secret");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(b"secret", &hash));
        assert!(!verify_password(b"Secret", &hash));
        assert!(!verify_password(b"secret", "not a hash"));
    }
}
