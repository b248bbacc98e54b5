"""CSV contact import: header mapping, per-row validation, upsert in batches, a per-row error report."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_link.attributes import convert, infer
from crm_link.contacts import validate_contact
from crm_link.errors import ValidationError
from crm_link.store import Store

ALIASES = {
    "first_name": ("first_name", "first", "firstname", "given_name", "forename"),
    "last_name": ("last_name", "last", "lastname", "surname", "family_name"),
    "email": ("email", "e_mail", "email_address", "mail"),
    "owner": ("owner", "salesperson", "sales_rep", "rep", "assigned_to"),
    "tags": ("tags", "tag", "labels"),
    # a dealer's DMS export calls its customer number many things; "#" reads as "no"
    "external_id": (
        "external_id",
        "customer_id",
        "customer_number",
        "customer_no",
        "customer_num",
        "cust_id",
        "cust_no",
        "cust_number",
        "cust_num",
        "custno",
        "customer",
        "dms_id",
        "dms_no",
        "dms_number",
        "dms_customer_id",
        "dms_customer_no",
        "account_no",
        "account_number",
        "acct_no",
        "acct_id",
        "id",
    ),
    "time_zone": ("time_zone", "timezone", "tz"),
    "do_not_call": ("do_not_call", "dnc"),
    "sms_opt_out": ("sms_opt_out", "no_sms"),
    "email_opt_out": ("email_opt_out", "no_email"),
    # consent to texts: yes records it (given by import, at the import's time), no withdraws it
    "sms_consent": (
        "sms_consent",
        "text_ok",
        "texts_ok",
        "sms_ok",
        "ok_to_text",
        "text_consent",
        "sms_opt_in",
        "text_opt_in",
    ),
}
PHONE_ALIASES = (
    "phone",
    "phones",
    "phone_number",
    "mobile",
    "cell",
    "cell_phone",
    "mobile_phone",
    "home_phone",
    "work_phone",
    "telephone",
    "tel",
)
_CONSENT = {"yes": True, "1": True, "true": True, "no": False, "0": False, "false": False}
_TRUE = {"1", "true", "yes", "y", "x"}
_FALSE = {"0", "false", "no", "n", ""}


def _norm_header(name: str) -> str:
    """A header as a key: "Customer #" -> customer_no, "E-mail" -> e_mail."""
    text = name.strip().lower().replace("#", " no ").replace("nbr", "no")
    text = re.sub(r"\bno\.", "no", text)
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based data row number (the header is row 0)
    field: str  # the contact field, e.g. phones[0]
    reason: str
    line: int = 0  # the spreadsheet's line the row starts on (the header is line 1)
    column: str = ""  # the header of the column at fault, as written in the file

    def describe(self) -> str:
        """In plain words: 'line 3, column "Mobile": '12' is too short'."""
        where = f"line {self.line}" if self.line else f"row {self.row}"
        return f'{where}, column "{self.column}": {self.reason}' if self.column else f"{where}: {self.reason}"


@dataclass(slots=True)
class ImportReport:
    total: int = 0
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False
    contact_ids: list[int] = field(default_factory=list)  # created or updated, in row order
    attribute_types: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len({e.row for e in self.errors})


@dataclass(frozen=True, slots=True)
class HeaderMap:
    """Which CSV column feeds which contact field; unknown columns become attributes."""

    fields: dict[str, int]
    phones: list[int]
    attributes: dict[str, int]


def map_headers(headers: list[str]) -> HeaderMap:
    """Map a CSV header row; ValidationError when nothing identifies a contact."""
    fields: dict[str, int] = {}
    phones: list[int] = []
    attributes: dict[str, int] = {}
    seen: set[str] = set()
    for i, raw in enumerate(headers):
        name = _norm_header(raw)
        if not name:
            continue
        if name in seen:
            raise ValidationError("header", f"column {raw!r} appears twice")
        seen.add(name)
        target = next((f for f, names in ALIASES.items() if name in names), None)
        if target and target not in fields:
            fields[target] = i
        elif name in PHONE_ALIASES:
            phones.append(i)
        else:
            attributes[name] = i
    if not (phones or "email" in fields or "first_name" in fields or "last_name" in fields):
        raise ValidationError(
            "header",
            "no column for a name, phone or email (expected e.g. first_name, last_name, phone, email)",
        )
    return HeaderMap(fields, phones, attributes)


def _plain(exc: ValidationError) -> str:
    if exc.field in ("row", "body"):
        return f"the row {exc.reason}" if exc.field == "row" else exc.reason
    return f"{exc.field}: {exc.reason}"


def _flag(value: str, column: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValidationError(column, f"{value!r} is not yes/no")


def _consent(value: str, column: str) -> dict[str, str] | None:
    """A consent cell: yes/1/true gives consent by import, no/0/false withdraws it."""
    v = value.strip().lower()
    if v not in _CONSENT:
        raise ValidationError(column, f"{value.strip()!r} is not yes/no, 1/0 or true/false")
    return {"source": "import"} if _CONSENT[v] else None


def row_to_input(
    row: list[str], hm: HeaderMap, types: dict[str, str] | None = None, date_format: str = ""
) -> dict[str, Any]:
    """One CSV row as contact input for validate_contact (attributes converted to their types)."""
    data: dict[str, Any] = {}
    for name, i in hm.fields.items():
        value = row[i].strip() if i < len(row) else ""
        if name in ("do_not_call", "sms_opt_out", "email_opt_out"):
            if value:
                data[name] = _flag(value, name)
        elif name == "sms_consent":
            if value:
                data[name] = _consent(value, name)
        elif name == "tags":
            if value:
                data["tags"] = [t.strip() for t in re.split(r"[;,|]", value) if t.strip()]
        elif value:
            data[name] = value
    phones = []
    for i in hm.phones:
        value = row[i].strip() if i < len(row) else ""
        phones += [p.strip() for p in re.split(r"[;|/]", value) if p.strip()]
    if phones:
        data["phones"] = phones
    attrs: dict[str, Any] = {
        name: convert(row[i].strip(), (types or {}).get(name, "text"), name, date_format)
        for name, i in hm.attributes.items()
        if i < len(row) and row[i].strip()
    }
    if attrs:
        data["attributes"] = attrs
    return data


def _with_lines(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on (a quoted cell may span lines)."""
    last = reader.line_num
    for row in reader:
        yield last + 1, row
        last = reader.line_num


def read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Headers and rows of a UTF-8 (BOM allowed) CSV; ValidationError naming the line on bad bytes."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ValidationError("file", f"line {line} is not UTF-8 (save the CSV as UTF-8)") from None
    except OSError as exc:
        raise ValidationError("file", f"cannot read {path}: {exc.strerror}") from None
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        headers = next(reader)
    except StopIteration:
        raise ValidationError("file", "is empty") from None
    return headers, _with_lines(reader)


_FLAGS = ("do_not_call", "sms_opt_out", "email_opt_out")


def row_problems(
    row: list[str], hm: HeaderMap, headers: list[str], region: str, owners: set[str]
) -> list[tuple[str, str, str]]:
    """Every problem of one row, cell by cell: (contact field, column header, reason)."""
    problems: list[tuple[str, str, str]] = []
    cell = lambda i: row[i].strip() if i < len(row) else ""  # noqa: E731
    for name, i in hm.fields.items():
        value = cell(i)
        if not value:
            continue
        try:
            if name in _FLAGS:
                _flag(value, name)
            elif name == "sms_consent":
                _consent(value, name)
            elif name == "owner":
                if value not in owners:
                    raise ValidationError("owner", f"no user named {value!r}")
            else:
                one = row_to_input([value], HeaderMap({name: 0}, [], {}))
                validate_contact(one, region=region, partial=True)
        except ValidationError as exc:
            problems.append((exc.field, headers[i], exc.reason))
    n = 0
    for i in hm.phones:
        for part in (p.strip() for p in re.split(r"[;|/]", cell(i))):
            if not part:
                continue
            try:
                validate_contact({"phones": [part]}, region=region, partial=True)
            except ValidationError as exc:
                problems.append((f"phones[{n}]", headers[i], exc.reason))
            n += 1
    return problems


async def import_contacts(
    store: Store,
    path: Path,
    *,
    dry_run: bool = False,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    declared_types: dict[str, str] | None = None,
    date_format: str = "",
) -> ImportReport:
    """Validate every row; write the good ones (create or update) in batches; report the bad ones.

    Attribute columns are typed: a declared type (settings [attributes]) wins, else the type the
    store already knows, else the one every value of the column fits (number, date, boolean, text).
    """
    headers, rows = read_csv(path)
    hm = map_headers(headers)
    all_rows = list(rows)
    report = ImportReport(total=len(all_rows), dry_run=dry_run)
    known = await store.followups.attribute_types()
    types: dict[str, str] = {}
    for name, i in hm.attributes.items():
        types[name] = (
            (declared_types or {}).get(name)
            or known.get(name)
            or infer((cells[i] for _, cells in all_rows if i < len(cells)), date_format)
        )
    report.attribute_types = types
    owner_ids = {u.username: u.id for u in await store.users.list()}
    owners = set(owner_ids)
    batch: list[tuple[int, Any]] = []
    done = 0

    async def flush() -> None:
        nonlocal batch
        if not batch or dry_run:
            batch = []
            return
        fields_list = [f for _, f in batch]
        async with store.db.transaction() as tx:
            by_ext, by_phone, by_email = await store.contacts.match_many_in(tx, fields_list)
            new: list[Any] = []
            pending: dict[str, int] = {}  # keys of rows created earlier in this batch -> index in `new`
            updates: list[tuple[int, Any]] = []
            for fields in fields_list:
                keys = (
                    ([f"x:{fields.external_id}"] if fields.external_id else [])
                    + [f"p:{p.e164}" for p in fields.phones]
                    + ([f"e:{fields.email.lower()}"] if fields.email else [])
                )
                existing = (
                    by_ext.get(fields.external_id or "")
                    or next((by_phone[p.e164] for p in fields.phones if p.e164 in by_phone), None)
                    or (by_email.get(fields.email.lower()) if fields.email else None)
                )
                earlier = next((pending[k] for k in keys if k in pending), None)
                if existing is not None:
                    updates.append((existing, fields))
                elif earlier is not None:
                    updates.append((-1 - earlier, fields))  # a later row for a contact this batch creates
                else:
                    for k in keys:
                        pending[k] = len(new)
                    new.append(fields)
            ids = await store.contacts.insert_many_in(tx, new, owner_ids)
            report.created += len(new)
            report.contact_ids += ids
            for target, fields in updates:
                contact_id = ids[-1 - target] if target < 0 else target
                await store.contacts.update_in(tx, contact_id, fields, merge=True)
                report.updated += 1
                report.contact_ids.append(contact_id)
        batch = []

    for n, (line, row) in enumerate(all_rows, start=1):
        if not any(cell.strip() for cell in row):
            done += 1
            continue
        try:
            if len(row) > len(headers):
                raise ValidationError(
                    "row", f"has {len(row)} cells but the header has {len(headers)} (a stray comma?)"
                )
            fields = validate_contact(row_to_input(row, hm, types, date_format), region=store.region)
            if fields.owner is not None and fields.owner not in owners:
                raise ValidationError("owner", f"no user named {fields.owner!r}")
        except ValidationError as exc:
            # name every cell at fault, not only the first one found
            found = [] if exc.field == "row" else row_problems(row, hm, headers, store.region, owners)
            if not found:
                found = [(exc.field, "", _plain(exc))]
            for field_name, column, reason in found:
                report.errors.append(RowError(n, field_name, reason, line=line, column=column))
        else:
            batch.append((n, fields))
        if len(batch) >= batch_size:
            await flush()
        done += 1
        if progress and (done % 500 == 0):
            progress(done, report.total)
    await flush()
    if not dry_run and types:
        await store.followups.set_attribute_types(
            {n: t for n, t in types.items() if n not in (declared_types or {})}, source="inferred"
        )
    if progress:
        progress(report.total, report.total)
    return report
