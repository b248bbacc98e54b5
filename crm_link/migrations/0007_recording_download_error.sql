-- Why a provider's recording was not fetched (e.g. its URL is not on the provider's API host); NULL when fine.
ALTER TABLE recordings ADD COLUMN error TEXT;
