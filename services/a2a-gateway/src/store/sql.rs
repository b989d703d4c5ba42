//! Statements whose shape depends on the request (optional filters, id
//! lists), and the page tokens that resume them.

use sqlx::{Any, any::AnyArguments, query::Query};
use uuid::Uuid;

use super::{Result, StoreError};

enum Arg {
    Text(String),
    Int(i64),
}

/// SQL text with its arguments, numbered `$1, $2, …` as they are added, which
/// both engines understand.
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self { text: text.to_owned(), args: Vec::new() }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn text(&mut self, value: impl Into<String>) -> &mut Self {
        self.args.push(Arg::Text(value.into()));
        self.placeholder()
    }

    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.args.push(Arg::Int(value));
        self.placeholder()
    }

    /// Appends `(p1, p2, …)` for `values`, which must not be empty.
    pub(crate) fn text_list<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, values: I) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(value);
        }
        self.push(")")
    }

    fn placeholder(&mut self) -> &mut Self {
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        self.args.iter().fold(sqlx::query(&self.text), |query, arg| match arg {
            Arg::Text(value) => query.bind(value.as_str()),
            Arg::Int(value) => query.bind(*value),
        })
    }
}

/// Where a list page ended: the last item's place in delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListCursor {
    pub workspace_id: Uuid,
    pub priority: i32,
    pub seq: i64,
}

/// Where a stats page ended: the last workspace's place, deepest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsCursor {
    pub queued: u64,
    pub workspace_id: Uuid,
}

// Tokens are hex so that they survive any transport untouched; the tag keeps
// a list token from being accepted by stats and the other way round.
impl ListCursor {
    pub(crate) fn token(&self) -> String {
        hex::encode(format!("l:{}:{}:{}", self.workspace_id, self.priority, self.seq))
    }

    pub(crate) fn parse(token: &str) -> Result<Self> {
        let fields = token_fields(token, "l", 3)?;
        Ok(Self {
            workspace_id: fields[0].parse().map_err(|_| StoreError::InvalidPageToken)?,
            priority: fields[1].parse().map_err(|_| StoreError::InvalidPageToken)?,
            seq: fields[2].parse().map_err(|_| StoreError::InvalidPageToken)?,
        })
    }
}

impl StatsCursor {
    pub(crate) fn token(&self) -> String {
        hex::encode(format!("s:{}:{}", self.queued, self.workspace_id))
    }

    pub(crate) fn parse(token: &str) -> Result<Self> {
        let fields = token_fields(token, "s", 2)?;
        Ok(Self {
            queued: fields[0].parse().map_err(|_| StoreError::InvalidPageToken)?,
            workspace_id: fields[1].parse().map_err(|_| StoreError::InvalidPageToken)?,
        })
    }

    /// Whether a workspace with these figures comes after the cursor.
    pub(crate) fn precedes(&self, queued: u64, workspace_id: Uuid) -> bool {
        queued < self.queued || (queued == self.queued && workspace_id > self.workspace_id)
    }
}

fn token_fields(token: &str, tag: &str, count: usize) -> Result<Vec<String>> {
    let bytes = hex::decode(token).map_err(|_| StoreError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?;
    let mut fields = text.split(':');
    if fields.next() != Some(tag) {
        return Err(StoreError::InvalidPageToken);
    }
    let fields: Vec<String> = fields.map(str::to_owned).collect();
    if fields.len() != count {
        return Err(StoreError::InvalidPageToken);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.text("x").push(" AND b = ").int(2).push(" AND c IN ").text_list(["p", "q"]);
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b = $2 AND c IN ($3, $4)");
    }

    #[test]
    fn tokens_round_trip_and_refuse_each_other() {
        let list = ListCursor { workspace_id: Uuid::new_v4(), priority: -7, seq: 42 };
        assert_eq!(ListCursor::parse(&list.token()).unwrap(), list);
        let stats = StatsCursor { queued: 9, workspace_id: Uuid::new_v4() };
        assert_eq!(StatsCursor::parse(&stats.token()).unwrap(), stats);
        assert!(matches!(ListCursor::parse(&stats.token()), Err(StoreError::InvalidPageToken)));
        assert!(matches!(StatsCursor::parse(&list.token()), Err(StoreError::InvalidPageToken)));
        for bad in ["zz", "", &hex::encode("l:not-a-uuid:1:2"), &hex::encode("l:1:2")] {
            assert!(matches!(ListCursor::parse(bad), Err(StoreError::InvalidPageToken)), "{bad}");
        }
    }
}
