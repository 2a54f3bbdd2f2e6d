//! An outbox record as the relay produces it: topic, key, value and headers, from its Mongo document.

use mongodb::bson::Document;
use rdkafka::message::{Header, OwnedHeaders};

/// One outbox record as read from Mongo, ready to produce.
pub struct Pending {
    pub seq: i64,
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

/// The record in `doc`, or which field publishing needs is missing.
pub fn pending(doc: &Document) -> Result<Pending, String> {
    let bytes = |field: &str| match doc.get(field) {
        Some(mongodb::bson::Bson::Binary(b)) => Some(b.bytes.clone()),
        _ => None,
    };
    let id = doc.get_str("id").map_err(|_| "no text field `id`")?;
    let event_id = doc.get_str("eventId").unwrap_or_default();
    let event_type = doc.get_str("type").unwrap_or_default();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "id",
            value: Some(id),
        })
        .insert(Header {
            key: "type",
            value: Some(event_type),
        });
    let extra = doc.get_document("headers").ok();
    if !extra.is_some_and(|h| h.contains_key(crate::dlq::header::EVENT_ID)) {
        headers = headers.insert(Header {
            key: crate::dlq::header::EVENT_ID,
            value: Some(event_id),
        });
    }
    for (k, v) in extra.into_iter().flatten() {
        if let Some(v) = v.as_str() {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
    }
    Ok(Pending {
        seq: doc
            .get_i64("seq")
            .map_err(|_| "no 64-bit integer field `seq`")?,
        topic: doc
            .get_str("topic")
            .map_err(|_| "no text field `topic`")?
            .to_string(),
        key: bytes("key").unwrap_or_else(|| {
            doc.get_str("aggregateid")
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        }),
        payload: bytes("payload"),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::pending;
    use mongodb::bson::doc;

    #[test]
    fn a_record_without_what_publishing_needs_says_which_field() {
        let good = doc! { "id": "a", "seq": 7_i64, "topic": "out", "type": "T" };
        assert!(pending(&good).is_ok_and(|p| p.seq == 7 && p.topic == "out"));
        for (field, why) in [("id", "`id`"), ("seq", "`seq`"), ("topic", "`topic`")] {
            let mut broken = good.clone();
            broken.remove(field);
            assert!(pending(&broken).is_err_and(|e| e.contains(why)), "{field}");
        }
        let mut legacy = good.clone();
        legacy.insert("seq", 7_i32);
        assert!(
            pending(&legacy).is_err(),
            "a 32-bit seq is not taken for a 64-bit one"
        );
    }
}
