//! The quote events most tests produce, and the exactly-once check over their outputs.

use super::*;

pub const EVENTS_PER_QUOTE: usize = 4; // requested, then priced three times

pub fn quote_events(quote: usize) -> Vec<(&'static str, Value)> {
    let q = format!("q{quote:05}");
    let mut events = vec![(
        "QuoteRequested",
        json!({"eventId": format!("{q}-r"), "quoteId": q, "customerId": format!("c{}", quote % 97),
               "product": "HOME", "coverageAmount": 250000.0, "requestedAt": 1_700_000_000_000_i64}),
    )];
    for n in 1..EVENTS_PER_QUOTE {
        events.push((
            "QuotePriced",
            json!({"eventId": format!("{q}-p{n}"), "quoteId": q, "premium": 100.0 * n as f64,
                   "validUntil": 1_800_000_000_000_i64, "pricedAt": 1_700_000_000_000_i64 + n as i64}),
        ));
    }
    events
}

/// Produces the events of `quotes` in order per quote (quotes in parallel), each with its event id header.
///
/// Like a real client, it sends an event again when Kafka did not acknowledge it in time (a broker
/// restart can hold a send past its deadline). The event may then be on the topic twice, which
/// outflow must absorb by event id.
pub async fn produce_quotes(t: &TestTopology, quotes: std::ops::Range<usize>) {
    // a send that times out (60 s, `TestTopology::producer`) gives the sends after it a new
    // producer (src/ingress/renewing.rs): keep sending an event again until this much time has gone
    const GIVE_UP_AFTER: Duration = Duration::from_secs(180);
    let started = std::time::Instant::now();
    let producer = t.producer();
    let topic = t.topic("quote-events");
    let resent = std::sync::atomic::AtomicUsize::new(0);
    let first_resend = std::sync::Mutex::new(None::<String>);
    let results: Vec<Result<(), String>> = futures::stream::iter(quotes)
        .map(|quote| {
            let (producer, topic, resent, first_resend) =
                (&producer, &topic, &resent, &first_resend);
            async move {
                for (kind, event) in quote_events(quote) {
                    let id = event["eventId"].as_str().unwrap_or_default().to_string();
                    while let Err(e) = producer.produce(topic, Some(kind), &event, &id).await {
                        if started.elapsed() > GIVE_UP_AFTER || !matches!(e, ProduceError::Kafka(_))
                        {
                            return Err(format!(
                                "{id}: {e} ({:?} after the first send)",
                                started.elapsed()
                            ));
                        }
                        resent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Ok(mut first) = first_resend.lock() {
                            first.get_or_insert_with(|| format!("{id}: {e}"));
                        }
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    // one line, not one per event: a failing test's output must still show its panic
    let resent = resent.into_inner();
    if resent > 0 {
        let first = first_resend.into_inner().ok().flatten().unwrap_or_default();
        eprintln!(
            "produce_quotes: {resent} sends were not acknowledged in time and sent again (the first: {first})"
        );
    }
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
}

/// Every event of `quotes` quotes is in Mongo once and on entity-updates exactly once.
pub async fn assert_exactly_once(t: &TestTopology, quotes: usize) {
    let total = quotes * EVENTS_PER_QUOTE;
    t.assert_event_log_reaches(total).await;
    assert_eq!(
        t.count("quote", doc! { "version": EVENTS_PER_QUOTE as i64 })
            .await,
        quotes as u64,
        "entity versions"
    );
    let updates = read_committed(
        &t.topic("entity-updates"),
        3,
        total,
        Duration::from_secs(180),
        Duration::from_secs(5),
    );
    let ids: HashSet<&String> = updates.iter().filter_map(|r| r.headers.get("id")).collect();
    let events: HashSet<&String> = updates
        .iter()
        .filter_map(|r| r.headers.get("outflow.event-id"))
        .collect();
    assert_eq!(
        updates.len(),
        total,
        "records on entity-updates (duplicates or losses)"
    );
    assert_eq!(ids.len(), total, "distinct outbox ids");
    assert_eq!(events.len(), total, "distinct event ids");
}
