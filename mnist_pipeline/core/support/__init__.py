"""What every layer may use: errors, atomic files, fault injection, settings, statistics, a quiet TensorFlow import."""
