//! Pure ble codec for fieldgate: bytes in, typed frames out, and back. No IO, no async.
