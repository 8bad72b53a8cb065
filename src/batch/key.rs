//! Idempotency keys. A batch's key is the UUID formed from the MD5 of its sorted message IDs
//! joined by `:` (seed 003), so re-flushing the same messages after a restart reuses the key.

use md5::{Digest, Md5};

/// The key of a batch made of these messages, in any order.
pub fn batch_key<'a>(message_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = message_ids.into_iter().collect();
    ids.sort_unstable();
    uuid_of(ids.join(":").as_bytes())
}

/// A key derived from another, for a deliberate second submission of the same messages
/// (a failed job's one resubmission).
pub fn derived_key(key: &str, purpose: &str) -> String {
    uuid_of(format!("{key}:{purpose}").as_bytes())
}

fn uuid_of(bytes: &[u8]) -> String {
    let digest: [u8; 16] = Md5::digest(bytes).into();
    uuid::Uuid::from_bytes(digest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            batch_key(["m-3", "m-1", "m-2"]),
            "cdec2dd3-9528-d632-3b11-17f960de2906"
        );
    }

    #[test]
    fn order_does_not_matter_and_content_does() {
        assert_eq!(batch_key(["a", "b"]), batch_key(["b", "a"]));
        assert_ne!(batch_key(["a", "b"]), batch_key(["a", "c"]));
        // Python: str(uuid.UUID(hashlib.md5(b"a").hexdigest()))
        assert_eq!(batch_key(["a"]), "0cc175b9-c0f1-b6a8-31c3-99e269772661");
    }

    #[test]
    fn derived_keys_differ_from_their_parent() {
        let key = batch_key(["m-1"]);
        assert_ne!(derived_key(&key, "resubmit"), key);
        assert_eq!(derived_key(&key, "resubmit"), derived_key(&key, "resubmit"));
    }
}
