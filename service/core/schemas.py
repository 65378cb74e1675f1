"""Response shapes shared by every domain."""

from pydantic import BaseModel


class Message(BaseModel):
    message: str
