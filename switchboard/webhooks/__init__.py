"""Write-back to the dealership's CRM: signed webhooks from the event outbox, and the REST adapter."""
