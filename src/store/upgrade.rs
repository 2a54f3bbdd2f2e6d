//! Bringing a database written by an earlier outflow version up to the current document layout.

use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Client, ClientSession, Collection, Database};

use super::StoreError;
use super::documents::OUTBOX;
use super::outbox;
use super::txn;

/// The outbox indexes of earlier versions, which stored a document per record keyed by its UUID
/// and found them by (shard, seq); records are stored in pages keyed by [`outbox::page_id`] now.
const LEGACY_OUTBOX_INDEXES: [&str; 2] = ["shard_seq_desc", "shard_seq"];

/// Moves the outbox records of an earlier version (a document per record, whose `_id` was its
/// UUID, kept now as `id`) into pages of one so the relay finds them, then drops the index they
/// were found by. Runs only while a legacy index exists, so it costs one index listing once done;
/// every process runs it before it writes anything. Each chunk of records moves in one
/// transaction (the old documents deleted, then the pages inserted: the legacy unique index holds
/// until the end), so an interrupted upgrade resumes where it stopped and two processes starting
/// at once cannot both move a record.
/// Processes of the earlier version must be stopped first: records they wrote after this would
/// be invisible to the relay.
pub async fn page_legacy_outbox(client: &Client, db: &Database) -> Result<(), StoreError> {
    let collection = db.collection::<Document>(OUTBOX);
    let indexes = collection.list_index_names().await?;
    let legacy: Vec<&str> = LEGACY_OUTBOX_INDEXES
        .into_iter()
        .filter(|name| indexes.iter().any(|i| i == name))
        .collect();
    if legacy.is_empty() {
        return Ok(());
    }
    let mut session = client.start_session().await?;
    let mut after: Option<Bson> = None;
    let mut moved = 0;
    loop {
        let filter = match &after {
            Some(last) => doc! { "records": { "$exists": false }, "_id": { "$gt": last.clone() } },
            None => doc! { "records": { "$exists": false } },
        };
        let chunk: Vec<Document> = collection
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(CHUNK)
            .await?
            .try_collect()
            .await?;
        let Some(last) = chunk.last().and_then(|d| d.get("_id")).cloned() else {
            break;
        };
        // `None`: another process moved some of them, so the same chunk is read again
        if let Some(n) = move_chunk(&mut session, &collection, chunk).await? {
            moved += n;
            after = Some(last);
        }
    }
    tracing::info!(
        records = moved,
        "outbox: moved the records of an earlier version into pages"
    );
    for name in legacy {
        match collection.drop_index(name).await {
            Ok(()) => tracing::info!("outbox: dropped the index {name} of an earlier version"),
            // 27 IndexNotFound: another process finished the upgrade first
            Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 27) =>
                {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Records moved per transaction.
const CHUNK: i64 = 500;

/// Moves one chunk into pages in one transaction; returns how many moved, or `None` when
/// another process moved some of them first.
async fn move_chunk(
    session: &mut ClientSession,
    collection: &Collection<Document>,
    chunk: Vec<Document>,
) -> Result<Option<u64>, StoreError> {
    let mut old_keys = Vec::with_capacity(chunk.len());
    let mut pages = Vec::with_capacity(chunk.len());
    for mut record in chunk {
        let (Some(Bson::String(shard)), Some(old_key)) =
            (record.remove("shard"), record.remove("_id"))
        else {
            continue; // not an outbox record of any version
        };
        let written = record
            .remove("createdAt")
            .and_then(|t| t.as_datetime().copied())
            .unwrap_or_else(DateTime::now);
        let seq = record.get("seq").cloned();
        record.insert("id", old_key.clone());
        old_keys.push(old_key);
        for mut page in outbox::pages(&shard, [record], written) {
            if let Some(seq) = &seq {
                // the legacy unique (shard, seq) index holds until the end: a page without
                // `seq` would collide with the shard's next page on (shard, null)
                page.insert("seq", seq.clone());
            }
            pages.push(page);
        }
    }
    if pages.is_empty() {
        return Ok(Some(0));
    }
    let moved = txn::run_unless_given_up(session, async |session| {
        let gone = collection
            .delete_many(doc! { "_id": { "$in": &old_keys } })
            .session(&mut *session)
            .await?
            .deleted_count;
        if gone < old_keys.len() as u64 {
            return Ok(false); // another process is moving them
        }
        collection
            .insert_many(pages.clone())
            .session(&mut *session)
            .await?;
        Ok(true)
    })
    .await?;
    Ok(moved.then_some(old_keys.len() as u64))
}
