//! FineQuant (arXiv 2308.09723): weight-only symmetric int8/int4 with adaptive group size.
