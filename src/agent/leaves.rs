//! The Connect leaf certificates an agent holds for its services, so that
//! every request for a service's leaf does not make the servers sign one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::connect::ca::SignedLeaf;

/// A leaf the agent holds for one of its services.
#[derive(Debug, Clone)]
pub struct CachedLeaf {
    /// The certificate the servers signed.
    pub leaf: SignedLeaf,
    /// Its private key.
    pub key_pem: String,
    /// The SPIFFE ID it proves.
    pub uri: String,
    /// The root index it was signed under.
    pub root_index: u64,
    /// When it is renewed: a random point between 60 % and 90 % of its life.
    pub renew_at_ms: u64,
}

/// The leaves the agent holds, by service.
#[derive(Debug, Default)]
pub struct LeafCache {
    leaves: Mutex<HashMap<String, CachedLeaf>>,
}

impl LeafCache {
    /// The leaf held for `service`, fresh or not.
    pub fn get(&self, service: &str) -> Option<CachedLeaf> {
        self.leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// Holds `leaf` for `service`, in place of the one before.
    pub fn insert(&self, service: &str, leaf: CachedLeaf) {
        self.leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), leaf);
    }
}
