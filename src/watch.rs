//! placeholder
use crate::error::Error;
use crate::settings::Settings;
pub async fn run(_s: Settings) -> Result<u8, Error> {
    Err(Error::Runtime("watch: in progress".into()))
}
