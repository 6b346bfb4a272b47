//! Who a client connection is, and what it may do, when the node requires a login (`auth`).
//!
//! A connection logs in with `AUTH user password`, or arrives logged in: its TLS client
//! certificate's common name names the user (as etcd's `--client-cert-auth`). Every command is
//! then checked against what the user's roles grant, read from this node's applied state,
//! before it runs; a refused command is answered `NOAUTH` (nobody logged in) or
//! `PERMISSION_DENIED` (naming the permission missing) and changes nothing. `AUTH` splits a
//! batch: what was sent before it runs as before, what was sent after it runs as the new user.
//!
//! A node joining the cluster (`--join`) connects with its own certificate, which lets it add
//! itself as a learner and promote itself, and nothing else.
//!
//! A follower checks its clients' commands before forwarding them; the leader trusts what a
//! member forwards (over TLS the member proved who it is). Checks read the node's own applied
//! state, so a grant or revocation takes effect on each node once it has applied it.
//!
//! Not done: logging out, and slowing down repeated failed logins beyond the hash's own cost.

use super::cluster::Cluster;
use super::executor::Item;
use crate::auth::Needs;
use crate::command::{Admin, Command};
use crate::protocol::message::{ErrorCode, Reply, Response};

/// A client connection's login.
pub(super) struct Session {
    /// Whether commands are checked at all (`auth` on, and not a member's forwarding link).
    required: bool,
    user: Option<String>,
    /// The node a member's certificate names: it may ask to join as that node.
    node: Option<u64>,
}

/// Part of a batch: requests to run, or an `AUTH` to answer before what follows runs.
pub(super) enum Segment {
    Items(Vec<Item>),
    Auth(Item),
}

impl Session {
    /// A session that checks commands if `required`, logged in as `user` (from a certificate);
    /// `node` is the node a member's certificate names, if it does.
    pub fn new(required: bool, user: Option<String>, node: Option<u64>) -> Session {
        Session { required, user: user.filter(|_| required), node }
    }

    /// Whether this is a node asking, with its own certificate, to join as itself (`kv-node
    /// --join`): adding itself as a learner, or promoting itself once caught up.
    fn joining(&self, command: &Command) -> bool {
        match command {
            Command::Admin(Admin::AddLearner { id, .. } | Admin::AddVoter { id }) => self.node == Some(*id),
            _ => false,
        }
    }

    /// Cuts a batch at each `AUTH`.
    pub fn segments(items: Vec<Item>) -> Vec<Segment> {
        let is_auth = |item: &Item| matches!(item.command(), Some(Command::Auth { .. }));
        // The usual batch, with no AUTH in it, is moved as it is.
        if !items.iter().any(is_auth) {
            return vec![Segment::Items(items)];
        }
        let mut segments = Vec::new();
        let mut run = Vec::new();
        for item in items {
            if is_auth(&item) {
                if !run.is_empty() {
                    segments.push(Segment::Items(std::mem::take(&mut run)));
                }
                segments.push(Segment::Auth(item));
            } else {
                run.push(item);
            }
        }
        if !run.is_empty() {
            segments.push(Segment::Items(run));
        }
        segments
    }

    /// Refuses each request this session may not run.
    pub fn vet(&self, items: &mut [Item], cluster: &impl Cluster) {
        if !self.required {
            return;
        }
        let accounts = cluster.accounts();
        let principal = self.user.as_deref().and_then(|user| accounts.principal(user));
        for item in items {
            let Some(command) = item.command() else { continue };
            if self.joining(command) {
                continue;
            }
            let verdict = match (&principal, command.needs()) {
                (_, Needs::Nothing) => Ok(()),
                (Some(principal), needs) => principal.check(&needs),
                (None, _) => Err(self.not_logged_in()),
            };
            if let Err(reply) = verdict {
                item.refuse(reply);
            }
        }
    }

    /// Whether the session may run commands that need a login: logged in, or no login needed.
    pub fn logged_in(&self) -> bool {
        !self.required || self.user.is_some()
    }

    /// Whether the session has what `needs` asks for, or the refusal to answer.
    pub fn allows(&self, needs: &Needs, cluster: &impl Cluster) -> Result<(), Reply> {
        if !self.required {
            return Ok(());
        }
        match self.user.as_deref().and_then(|user| cluster.accounts().principal(user)) {
            Some(principal) => principal.check(needs),
            None => Err(self.not_logged_in()),
        }
    }

    fn not_logged_in(&self) -> Reply {
        let message = match &self.user {
            Some(user) => {
                format!("there is no user '{user}' (any more); log in with AUTH user password")
            }
            None => "log in first: AUTH user password".to_string(),
        };
        Reply::error(ErrorCode::NoAuth, message)
    }

    /// Answers an `AUTH`: checks the password against the user's hash (off the async threads),
    /// and on success logs the session in as that user.
    pub async fn login(&mut self, item: &Item, cluster: &impl Cluster) -> Response {
        let Some(Command::Auth { user, password }) = item.command() else {
            return item.answer(Reply::error(ErrorCode::BadRequest, "not an AUTH request"));
        };
        if !self.required {
            return item.answer(Reply::Status { value: "OK (auth is off on this node)".into() });
        }
        let hash = cluster.accounts().users.get(user).map(|u| u.password.clone());
        let password = password.clone();
        let known = hash.is_some();
        // An unknown user costs the same as a wrong password, so that timing does not tell.
        let hash = hash.unwrap_or_else(|| UNKNOWN_USER_HASH.clone());
        let matches = tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if matches && known {
            self.user = Some(user.clone());
            item.answer(Reply::ok())
        } else {
            item.answer(Reply::error(ErrorCode::NoAuth, "invalid user or password"))
        }
    }
}

/// A hash checked against for unknown users, made once.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::auth::hash_password(b"no user has this password"));
