//! metering-tower
