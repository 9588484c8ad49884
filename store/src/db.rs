//! redb errors as [`Error::Db`]: the data-path error lives in `cairn-artifact`, which does not
//! know redb, so the conversion is an extension method rather than a `From`.

use cairn_artifact::Error;

/// `.db()?` in place of `?` on a redb result.
pub(crate) trait DbResult<T> {
    fn db(self) -> Result<T, Error>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self) -> Result<T, Error> {
        self.map_err(|e| Error::Db(e.into().to_string()))
    }
}
