//! Where `cargo xtask setup` puts the real GeoLite2 database the geo tests and the bench use:
//! the PyPI package `maxminddb-geolite2` (MaxMind's GeoLite2-City of July 2018), installed
//! with pip into a directory of its own so no Python environment of the host is touched.

/// The pinned `maxminddb-geolite2` release (its database is frozen, so tests can name
/// countries of known addresses).
pub const PACKAGE_VERSION: &str = "2018.703";

/// The pinned Python `maxminddb` reader installed beside it; the geo test walks the database
/// with it as an independent check of pbxguard's own walk.
pub const READER_VERSION: &str = "3.2.0";

/// `pip install --target` directory; put it on `PYTHONPATH` to import `maxminddb`.
pub const PYTHON_DIR: &str = "/opt/pbxguard-test/python";

/// A symlink to the `GeoLite2-City.mmdb` inside the installed package.
pub const CITY_DB: &str = "/opt/pbxguard-test/GeoLite2-City.mmdb";
