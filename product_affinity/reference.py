"""Reference data shared by the sources and the cleaning rules."""

# Canonical country name -> spellings seen in the operational sources (compared
# case-insensitively after trimming). Source-aligned tables keep the canonical name only.
COUNTRY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "United States": ("United States", "USA", "US", "U.S.", "United States of America"),
    "Spain": ("Spain", "ES", "España", "Espana", "SP"),
    "Germany": ("Germany", "DE", "Deutschland", "GER"),
    "Canada": ("Canada", "CA"),
    "Australia": ("Australia", "AU", "AUS"),
    "India": ("India", "IN", "IND"),
    "Saudi Arabia": ("Saudi Arabia", "SA", "KSA"),
    "Montenegro": ("Montenegro", "ME", "MNE"),
}
