//! Which messages the agent has received, by A2A message id, so that a
//! redelivery (the gateway retrying after a replica crash) is one message as
//! far as the agent can tell: it is answered with the ids of its first
//! delivery and not recorded again.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// The ids a message's answer carries. A redelivery gets the same ones; its
/// text is derived from the message's text, which a redelivery repeats, so
/// only the ids are kept (a few hundred bytes per remembered message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnswerIds {
    pub(crate) context_id: String,
    pub(crate) reply_message_id: String,
    /// The task a streamed answer reports as working.
    pub(crate) task_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Stats {
    /// Messages recorded: first deliveries, and messages without an id.
    pub(crate) received: u64,
    /// Deliveries of a message id already seen.
    pub(crate) duplicates: u64,
}

/// A recorded message: what a test counts at the agent to tell a lost or
/// doubled message, and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Delivery {
    pub(crate) message_id: Option<String>,
    pub(crate) text: String,
    /// Milliseconds since the Unix epoch, by the agent's clock.
    pub(crate) received_at_ms: u64,
}

/// The record of deliveries, remembering the ids of the last `capacity`
/// messages.
pub(crate) struct Deliveries {
    capacity: usize,
    answers: HashMap<String, AnswerIds>,
    /// Remembered ids, oldest first, to forget in arrival order.
    order: VecDeque<String>,
    /// The recorded messages, in arrival order.
    recorded: Vec<Delivery>,
    /// The same texts, kept apart so that `/admin/received` is a slice.
    texts: Vec<String>,
    duplicates: u64,
}

impl Deliveries {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            answers: HashMap::new(),
            order: VecDeque::new(),
            recorded: Vec::new(),
            texts: Vec::new(),
            duplicates: 0,
        }
    }

    /// Takes in an admitted message and returns the ids of its answer. A
    /// message id seen before gets the ids of its first delivery and leaves
    /// no record but the duplicate count; anything else is recorded with
    /// `fresh` ids (a message without an id can never be recognised again).
    pub(crate) fn deliver(
        &mut self,
        message_id: Option<&str>,
        text: String,
        fresh: impl FnOnce() -> AnswerIds,
    ) -> AnswerIds {
        let Some(message_id) = message_id.filter(|_| self.capacity > 0) else {
            self.record(message_id, text);
            return fresh();
        };
        match self.answers.entry(message_id.to_owned()) {
            Entry::Occupied(seen) => {
                self.duplicates += 1;
                seen.get().clone()
            }
            Entry::Vacant(slot) => {
                let ids = slot.insert(fresh()).clone();
                self.record(Some(message_id), text);
                self.order.push_back(message_id.to_owned());
                if self.order.len() > self.capacity
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.answers.remove(&oldest);
                }
                ids
            }
        }
    }

    fn record(&mut self, message_id: Option<&str>, text: String) {
        let received_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
        self.recorded.push(Delivery { message_id: message_id.map(str::to_owned), text: text.clone(), received_at_ms });
        self.texts.push(text);
    }

    pub(crate) fn recorded(&self) -> &[Delivery] {
        &self.recorded
    }

    pub(crate) fn texts(&self) -> &[String] {
        &self.texts
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats { received: self.texts.len() as u64, duplicates: self.duplicates }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> impl FnOnce() -> AnswerIds {
        move || AnswerIds { context_id: format!("c{n}"), reply_message_id: format!("r{n}"), task_id: format!("t{n}") }
    }

    #[test]
    fn a_repeated_message_id_gets_the_first_answer_and_is_counted_not_recorded() {
        let mut deliveries = Deliveries::new(10);
        let first = deliveries.deliver(Some("m"), "hello".into(), ids(1));
        let again = deliveries.deliver(Some("m"), "hello".into(), ids(2));
        assert_eq!(again, first);
        assert_eq!(first.reply_message_id, "r1");
        assert_eq!(deliveries.texts(), ["hello"]);
        assert_eq!(deliveries.stats(), Stats { received: 1, duplicates: 1 });
        let recorded = deliveries.recorded();
        assert_eq!((recorded.len(), recorded[0].message_id.as_deref()), (1, Some("m")));
        assert!(recorded[0].received_at_ms > 1_700_000_000_000, "{recorded:?}");
    }

    #[test]
    fn messages_without_an_id_are_always_new() {
        let mut deliveries = Deliveries::new(10);
        let a = deliveries.deliver(None, "x".into(), ids(1));
        let b = deliveries.deliver(None, "x".into(), ids(2));
        assert_ne!(a, b);
        assert_eq!(deliveries.stats(), Stats { received: 2, duplicates: 0 });
    }

    #[test]
    fn only_the_last_capacity_ids_are_remembered() {
        let mut deliveries = Deliveries::new(2);
        deliveries.deliver(Some("a"), "a".into(), ids(1));
        deliveries.deliver(Some("b"), "b".into(), ids(2));
        deliveries.deliver(Some("c"), "c".into(), ids(3));
        assert_eq!((deliveries.answers.len(), deliveries.order.len()), (2, 2));
        // "a" was forgotten, so it counts as new again; "c" is still known.
        assert_eq!(deliveries.deliver(Some("a"), "a".into(), ids(4)).reply_message_id, "r4");
        assert_eq!(deliveries.deliver(Some("c"), "c".into(), ids(5)).reply_message_id, "r3");
        assert_eq!(deliveries.texts(), ["a", "b", "c", "a"]);
        assert_eq!(deliveries.stats(), Stats { received: 4, duplicates: 1 });
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut deliveries = Deliveries::new(0);
        deliveries.deliver(Some("a"), "a".into(), ids(1));
        deliveries.deliver(Some("a"), "a".into(), ids(2));
        assert_eq!(deliveries.stats(), Stats { received: 2, duplicates: 0 });
        assert!(deliveries.answers.is_empty());
    }
}
