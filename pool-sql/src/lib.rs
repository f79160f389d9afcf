//! SQL statement classifier.
