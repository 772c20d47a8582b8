"""Gallery-retrieval evaluation: clean photos form the gallery, distorted photos are the queries."""
