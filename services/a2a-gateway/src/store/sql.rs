//! The page tokens that resume the queue's listings.

use uuid::Uuid;

use super::{Result, StoreError};

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
