"""Domain recommenders (plain torch) behind one interface, see base.DomainModel."""
