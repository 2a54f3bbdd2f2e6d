//! Removes what a run created (its database and its topics), so runs do not pile up on the servers.
//!
//! Best effort: a failure is printed and the run's figures stand. The integration tests remove
//! theirs with it too (`tests/common/cleanup.rs` includes this file). Without it the local broker's
//! data directory grew with every run (to 11–12 GB in a day of runs), and runs slowed on it.

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

/// Drops database `name`, first killing the sessions its partitions' owners ran their batches
/// in (`ownerSession`, as a new owner does): an outflow killed mid-batch leaves a transaction
/// open, and the drop would wait for it to expire (60 s).
pub async fn drop_database(uri: &str, name: &str) {
    let client = match Client::with_uri_str(uri).await {
        Ok(client) => client,
        Err(e) => return eprintln!("clean-up: database {name} not dropped: {e}"),
    };
    let database = client.database(name);
    let owners = database
        .collection::<Document>(outflow::store::documents::OFFSETS)
        .distinct("ownerSession", doc! {})
        .await
        .unwrap_or_default();
    if !owners.is_empty() {
        // an ended session is no longer there to kill: nothing to report
        let _ = client
            .database("admin")
            .run_command(doc! { "killSessions": owners })
            .await;
    }
    if let Err(e) = database.drop().await {
        eprintln!("clean-up: database {name} not dropped: {e}");
    }
}

/// Deletes `topics` from the cluster `admin` talks to.
pub async fn delete_topics(admin: &AdminClient<DefaultClientContext>, topics: &[String]) {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match admin.delete_topics(&names, &options).await {
        Ok(results) => {
            for (topic, code) in results.into_iter().filter_map(Result::err) {
                eprintln!("clean-up: topic {topic} not deleted: {code}");
            }
        }
        Err(e) => eprintln!("clean-up: topics {names:?} not deleted: {e}"),
    }
}

/// Deletes `topics` from the cluster at `brokers`.
pub async fn delete_topics_at(brokers: &str, topics: &[String]) {
    match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    {
        Ok(admin) => delete_topics(&admin, topics).await,
        Err(e) => eprintln!("clean-up: topics {topics:?} not deleted: {e}"),
    }
}
