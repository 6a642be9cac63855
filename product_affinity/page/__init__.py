"""The data product page: a static HTML page for people, built from the published snapshot."""
