//! Statements whose shape depends on the request: optional filters, id
//! lists, multi-row `VALUES`.

use sqlx::{Any, any::AnyArguments, query::Query};

enum Arg {
    Text(Option<String>),
    Int(i64),
}

/// SQL text with its arguments, numbered `$1, $2, …` as they are added, which
/// both engines understand.
pub struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), args: Vec::new() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn text(&mut self, value: impl Into<String>) -> &mut Self {
        self.args.push(Arg::Text(Some(value.into())));
        self.placeholder()
    }

    /// Appends a placeholder for `value`, SQL `NULL` when `None`.
    pub fn text_or_null(&mut self, value: Option<impl Into<String>>) -> &mut Self {
        self.args.push(Arg::Text(value.map(Into::into)));
        self.placeholder()
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        self.args.push(Arg::Int(value));
        self.placeholder()
    }

    /// Appends `(p1, p2, …)` for `values`, which must not be empty.
    pub fn text_list<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, values: I) -> &mut Self {
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

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        self.args.iter().fold(sqlx::query(&self.text), |query, arg| match arg {
            Arg::Text(value) => query.bind(value.as_deref()),
            Arg::Int(value) => query.bind(*value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.text("x").push(" AND b = ").int(2).push(" AND c IN ").text_list(["p", "q"]);
        sql.push(" AND d IS ").text_or_null(None::<String>);
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b = $2 AND c IN ($3, $4) AND d IS $5");
    }
}
