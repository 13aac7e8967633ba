//! The ResourceQuota controller: keeps each quota's `status.hard` equal to its `spec.hard` and
//! `status.used` equal to what the namespace's objects really use, so usage charged at admission
//! is given back when objects are deleted or pods finish, and a changed spec takes effect.
//! Level-triggered per namespace: any change to a quota, or to an object in a namespace that has
//! quotas, queues that namespace for a recount; and every namespace with quotas is recounted
//! every five minutes regardless, so drift nothing signals heals.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::{Ctx, Loop, Work, queue::Queue};
use crate::{
    api::{ApiError, decode_object, quota, registry},
    store::{Object, Store},
};

const COMPONENT: &str = "resourcequota-controller";

/// How often a namespace's quotas are recounted without a change to prompt it (upstream's
/// `--resource-quota-sync-period` default).
const RESYNC: SignedDuration = SignedDuration::from_mins(5);

/// The quotas known, as `namespace/name`.
#[derive(Debug, Default)]
pub struct Quotas {
    known: BTreeSet<String>,
}

impl Quotas {
    fn has_quotas(&self, namespace: &str) -> bool {
        let from = format!("{namespace}/");
        self.known.range(from.clone()..).next().is_some_and(|k| k.starts_with(&from))
    }

    /// A store key changed (`present`: it exists now).
    pub fn observe(&mut self, key: &str, present: bool, queue: &mut Queue<Work>) {
        let Some((r, Some(namespace), name)) = registry::by_key(key) else { return };
        if r.kind == "ResourceQuota" {
            let id = format!("{namespace}/{name}");
            if present {
                self.known.insert(id);
            } else {
                self.known.remove(&id);
            }
        } else if r.kind == "Event" || !self.has_quotas(namespace) {
            // Events change too often to recount for each; a `count/events.events.k8s.io`-style
            // quota on them is recounted with the namespace's next other change.
            return;
        }
        queue.push((Loop::Quota, namespace.to_owned()));
    }

    /// Recounts the quotas of `namespace` and writes the statuses that changed.
    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        namespace: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let server = &*ctx.server;
        // Admission charges and writes under the same lock: a recount never runs between a
        // charge and the write of what was charged for.
        let _held = server.quota_lock().lock().await;
        let r = registry::builtin("resourcequotas", "")?;
        let (stored, _): (Vec<Object>, _) = server.store.list(&r.namespace_prefix(namespace));
        if stored.is_empty() {
            return Ok(None);
        }
        for o in stored {
            let mut object = decode_object(&o)?;
            let Some(status) = quota::recounted_status(server, &object) else { continue };
            object["status"] = status;
            object["metadata"]["resourceVersion"] = o.mod_revision.to_string().into();
            server.replace_as(object, true, COMPONENT).await?;
        }
        // Recounted again later whatever happens meanwhile (upstream's resync): usage no change
        // shows (an Event deleted, a charge whose write failed unseen) is corrected then.
        Ok(Some(ctx.clock.now() + RESYNC))
    }
}
