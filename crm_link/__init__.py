"""The CRM store: schema, migrations, contacts, phones, touches, follow-ups, users."""
