from pipeline.emit.render import SiteInfo

__all__ = ["SiteInfo"]
