//! metering-server
